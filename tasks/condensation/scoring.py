"""Per-row priorities for selection: IFD with a small model (Superfiltering), teacher uncertainty.

ifd          Instruction-Following Difficulty (Li et al., 2023, "From Quantity to Quality",
             arXiv:2308.12032): IFD(Q, A) = s(A | Q) / s(A), the mean cross-entropy of the answer
             tokens with the instruction over without it. High IFD: the instruction helps little,
             the example is hard, and worth training on; IFD >= 1: the instruction does not help
             at all, the pair is misaligned, and it is filtered. Superfiltering (Li et al., 2024,
             arXiv:2402.00530) shows a small model's IFD ranks data like a large model's, so the
             scorer is `condense.scorer`, optionally cut to `scorer_layers` blocks (first and last
             halves, as the distill student). Q is the student's "[label]" prompt (chat format), A
             the teacher's rationale plus "Answer: <label>" (or only the latter without a kept
             rationale); "without Q" is the same chat header around an empty user turn.
uncertainty  the teacher's own doubt from synthesis: mean over the signals present of
             (1 - agreement), teacher_entropy / max entropy, (1 - teacher_confidence). Rows the
             teacher is unsure about lie near its decision boundary: the uncertainty-sampling rule
             of active learning (Lewis & Gale, 1994). A row without any signal scores 0.

Both return a float per row; selection prefers higher scores (ties by the seeded order).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from tasks import models
from tasks.distillation.examples import ANSWER, LABEL, gold_label, task_prompt
from tasks.student import init_student, kept_layers

BATCH = 16


def uncertainty(rows: list[dict]) -> np.ndarray:
    """`(n,)` teacher uncertainty in [0, 1] from agreement, entropy and confidence (0: none known)."""
    n = len(rows)
    agree = np.array([r.get("agreement") if r.get("agreement") is not None else np.nan for r in rows], dtype=float)
    ent = np.array([r.get("teacher_entropy") if r.get("teacher_entropy") is not None else np.nan for r in rows], dtype=float)
    conf = np.array([r.get("teacher_confidence") if r.get("teacher_confidence") is not None else np.nan for r in rows],
                    dtype=float)
    top = np.nanmax(ent) if np.isfinite(ent).any() else 1.0
    parts = np.stack([1.0 - agree, ent / (top if top > 0 else 1.0), 1.0 - conf]) if n else np.zeros((3, 0))
    known = np.isfinite(parts)
    total = np.where(known, parts, 0.0).sum(0)
    return np.where(known.any(0), total / np.maximum(known.sum(0), 1), 0.0)


# ---------------------------------------------------------------------------------------------
# The small scoring model


def load_scorer(spec: str, layers: int = 0):
    """(model float32 on CPU/GPU, tokenizer): `spec`, cut to its first/last `layers` // 2 blocks if > 0."""
    path = models.resolve_model(spec)
    tok = models.load_tokenizer(path)
    model = models.load_causal_lm(path, "float32")
    n = model.config.num_hidden_layers
    if 0 < layers < n:
        model = init_student(model, kept_layers(n, (layers + 1) // 2, layers // 2))
    return model.eval(), tok


def answer_text(domain, row: dict) -> str:
    """A for IFD: the teacher's rationale (if kept) and the gold answer."""
    answer = f"{ANSWER} {gold_label(domain, row)}"
    rationale = (row.get("rationale") or "").strip()
    return f"{rationale}\n{answer}" if rationale else answer


def _fit(prompt: list[int], target: list[int], max_length: int) -> tuple[list[int], list[int]]:
    target = target[: max_length // 2]
    budget = max_length - len(target)
    return (prompt[-budget:] if len(prompt) > budget else prompt), target


@torch.no_grad()
def target_hidden(model, pairs: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int = BATCH,
                  desc: str = "score"):
    """Per pair: (hidden `(T, H)` at the positions predicting its T target tokens, target ids `(T,)`)."""
    device = next(model.parameters()).device
    out: list = [None] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        idx = order[start : start + batch_size]
        width = max(len(pairs[i][0]) + len(pairs[i][1]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, i in enumerate(idx):
            seq = pairs[i][0] + pairs[i][1]
            ids[b, : len(seq)] = torch.tensor(seq)
            mask[b, : len(seq)] = 1
        hidden = model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device))[0].float()
        for b, i in enumerate(idx):
            p, t = len(pairs[i][0]), len(pairs[i][1])
            out[i] = (hidden[b, p - 1 : p + t - 1].clone(), torch.tensor(pairs[i][1], device=device))
    return out


@torch.no_grad()
def _mean_nll(model, hidden_targets) -> np.ndarray:
    head = model.get_output_embeddings()
    out = []
    for h, y in hidden_targets:
        logits = head(h)
        out.append(float(torch.nn.functional.cross_entropy(logits.float(), y)))
    return np.array(out)


def ifd(rows: list[dict], domain, model, tok, max_length: int = 256, batch_size: int = BATCH) -> np.ndarray:
    """`(n,)` IFD = s(A|Q) / s(A) per row with the scoring model (Li et al. 2023, Eq. 3)."""
    if not rows:
        return np.zeros(0)
    empty = tok(models.chat_prompt(tok, ""), add_special_tokens=False)["input_ids"]
    with_q, without_q = [], []
    for row in rows:
        target = tok(answer_text(domain, row), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        prompt = tok(task_prompt(domain, tok, row, LABEL), add_special_tokens=False)["input_ids"]
        with_q.append(_fit(prompt, target, max_length))
        without_q.append(_fit(empty, with_q[-1][1], max_length))
    pad = tok.pad_token_id
    s_qa = _mean_nll(model, target_hidden(model, with_q, pad, batch_size, "IFD s(A|Q)"))
    s_a = _mean_nll(model, target_hidden(model, without_q, pad, batch_size, "IFD s(A)"))
    return s_qa / np.maximum(s_a, 1e-6)
