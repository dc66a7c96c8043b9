"""Per-row priorities for selection: IFD with a small model (Superfiltering), teacher uncertainty,
self-supervised prototypicality.

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

prototype    Sorscher et al., 2022, "Beyond neural scaling laws: beating power law scaling via
             data pruning" (NeurIPS, arXiv:2206.14486), their self-supervised prototype metric:
             k-means over the row embeddings, difficulty = cosine distance to the nearest
             centroid. Their theory and ImageNet runs: when the kept set is small, keep the
             EASY (prototypical) rows; only with abundant data do the hard ones pay. So
             `prototype_keep: easy` (default) ranks near-centroid rows first, `hard` far ones.

ifd and uncertainty return a float per row, higher preferred; prototype_distance returns the
distance, and tasks.condense orders by it ascending (easy) or descending (hard). Ties go by the
seeded order.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from tasks import models
from tasks.distillation.examples import ANSWER, LABEL, gold_label, task_prompt
from tasks.student import init_student, kept_layers

BATCH = 32  # rows per forward batch (at most)
MAX_TOKENS = 2048  # padded tokens per forward batch (at most)
MIN_PREFIX = 4  # a shared prompt prefix at least this long runs once (its KV cache reused)


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


def prototype_distance(x: np.ndarray, clusters: int = 0, seed: int = 0) -> np.ndarray:
    """`(n,)` cosine distance of each L2-normalised row of `x` to its nearest k-means centroid.

    `clusters` 0: round(sqrt(n)), our default (about sqrt(n) rows per cluster at any scale).
    """
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import normalize

    n = len(x)
    k = min(n, clusters or max(1, round(math.sqrt(n))))
    if n == 0 or k < 2:
        return np.zeros(n)
    centers = normalize(KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x).cluster_centers_)
    return 1.0 - (normalize(x) @ centers.T).max(1).astype(float)


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


def length_batches(lengths, batch_size: int = BATCH, max_tokens: int = MAX_TOKENS) -> list[np.ndarray]:
    """Row indices in batches of similar length: sorted (stable), at most `batch_size` rows and
    `max_tokens` padded tokens each, so padding wastes little and no batch blows up memory."""
    lengths = np.asarray(lengths)
    batches, cur = [], []
    for i in np.argsort(lengths, kind="stable"):
        if cur and (len(cur) >= batch_size or (len(cur) + 1) * int(lengths[i]) > max_tokens):
            batches.append(np.array(cur))
            cur = []
        cur.append(int(i))
    if cur:
        batches.append(np.array(cur))
    return batches


def common_prefix(prompts: list[list[int]]) -> int:
    """Length of the prefix all prompts share, leaving each at least one token of its own."""
    if not prompts:
        return 0
    first = prompts[0]
    n = min(len(q) for q in prompts) - 1
    for q in prompts:
        while n > 0 and q[:n] != first[:n]:
            n = next((j for j in range(n) if q[j] != first[j]), n)
    return max(n, 0)


def forward_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype | None:
    """The autocast dtype for scoring forwards: bfloat16 where the hardware runs it natively
    ("auto": CUDA with bf16, or a CPU with AVX512-BF16/AMX, where oneDNN runs bf16 matmuls ~2x
    faster than float32), else None (float32). Emulated bf16 would be slower than float32."""
    if dtype == "float32":
        return None
    if dtype == "bfloat16":
        return torch.bfloat16
    return torch.bfloat16 if models.native_bf16(device) else None


def hidden_batches(model, pairs: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int = BATCH,
                   max_tokens: int = MAX_TOKENS, desc: str = "score", amp: torch.dtype | None = None):
    """Per length batch: (rows `(B,)`, hidden `(N, H)` float32 at the N positions predicting the
    rows' target tokens, their targets `(N,)`, owner `(N,)` = position in `rows`).

    Three things keep the forward passes cheap (the cost of IFD and gradient matching):
    - Right padding and no attention mask: in a causal LM a token never attends to the pads after
      it, so the real positions are exactly those of the unpadded rows, and attention takes the
      plain causal path. Rows are sorted by length, so the pads are few.
    - The prompt prefix every row shares (the chat template's system turn: 22-29 of ~90 tokens
      with SmolLM2) runs once; its key/value cache is repeated over each batch.
    - `amp`: autocast dtype of the forward (bfloat16 ~2x faster on CPUs with AVX512-BF16);
      the returned hidden states are float32 either way. inference_mode: no autograd records.
    """
    device = next(model.parameters()).device
    base = model.base_model
    shared = common_prefix([p for p, _ in pairs])
    shared = shared if shared >= MIN_PREFIX else 0
    lengths = [len(p) + len(t) - shared for p, t in pairs]
    kv_name = models.kv_cache_name(base)

    def forward(ids: torch.Tensor, cache=None):
        # contexts entered per call, not around the generator: their state is per thread, and
        # the caller's code between two batches must not run under them
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            return base(input_ids=ids.to(device), use_cache=cache is not None or shared > 0, **{kv_name: cache})

    prefix = models.kv_cache_of(forward(torch.tensor([pairs[0][0][:shared]]))) if shared else None
    for rows in tqdm(length_batches(lengths, batch_size, max_tokens), desc=desc, unit="batch", leave=False):
        width = max(lengths[i] for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        b_idx, t_idx, targets = [], [], []
        for b, i in enumerate(rows):
            prompt, target = pairs[i]
            seq = prompt[shared:] + target
            ids[b, : len(seq)] = torch.tensor(seq)
            start = len(prompt) - shared - 1  # the position that predicts target[0]
            b_idx += [b] * len(target)
            t_idx += range(start, start + len(target))
            targets += target
        cache = None
        if prefix is not None:
            cache = copy.deepcopy(prefix)
            cache.batch_repeat_interleave(len(rows))
        hidden = forward(ids, cache)[0]
        owner = torch.tensor(b_idx, device=device)
        yield rows, hidden[owner, torch.tensor(t_idx, device=device)].float(), \
            torch.tensor(targets, device=device), owner


def target_hidden(model, pairs: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int = BATCH,
                  desc: str = "score", max_tokens: int = MAX_TOKENS, amp: torch.dtype | None = None):
    """Per pair: (hidden `(T, H)` at the positions predicting its T target tokens, target ids `(T,)`)."""
    out: list = [None] * len(pairs)
    for rows, h, y, owner in hidden_batches(model, pairs, pad_id, batch_size, max_tokens, desc, amp):
        counts = torch.bincount(owner, minlength=len(rows)).tolist()
        for i, hh, yy in zip(rows, h.split(counts), y.split(counts)):
            out[int(i)] = (hh, yy)
    return out


@torch.inference_mode()
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
