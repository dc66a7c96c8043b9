"""Distill the teacher into a layer-dropped student: multi-task KD (distilling step-by-step).

    stillhouse stage distill --domain healthcare       # what `dvc repro distill@healthcare` runs

Inputs:  data/<domain>/condense/train.jsonl   training rows (record + teacher rationale, if kept)
         data/<domain>/synthesize/test.jsonl  held-out rows with the teacher's answers
         synthesize.teacher                   the teacher spec (tasks/models.resolve_model)
Outputs: data/<domain>/distill/student/       save_pretrained student (bf16) + tokenizer +
                                              stillhouse.json (prompt format, kept layers, teacher)
         data/<domain>/distill/metrics.json   held-out loss / perplexity / accuracy of teacher,
                                              student before and after training; speed
         data/<domain>/distill/history.csv    per step: loss, kd, ce, label and rationale loss, lr
         data/<domain>/distill/predictions.jsonl  one row per held-out record (fairness reads it)
Params:  distill.* (keep_first, keep_last, steps, batch_size, max_length, lr, temperature,
         kd_weight, ce_weight, rationale_weight, eval_max_new_tokens, seed), synthesize.teacher.

Student: the teacher with only its first `keep_first` and last `keep_last` decoder blocks
(embeddings, final norm and head kept). First+last keeps the blocks that read the embedding
space and write the head's input; measured here it beats keeping every k-th block by far.

Tasks (Hsieh et al., 2023, "Distilling Step-by-Step!", arXiv:2305.02301, Eq. 3), per record:
  label      user "[label] <question>"     -> assistant "Answer: <gold label>"
  rationale  user "[rationale] <question>" -> assistant "<teacher rationale>" (kept rows only)
  L = (1 - rationale_weight) * L_label + rationale_weight * L_rationale     (L_label alone when
      no row has a rationale), each task's
  L_task = kd_weight * T^2 KL(p_T || q_T) + ce_weight * CE(gold tokens)    (Hinton et al., 2015)
on the assistant tokens only (the end-of-turn token included), with the teacher's logits computed
online under torch.no_grad (memoised per example: the teacher is frozen). Forward passes run under bf16 autocast; the head and both losses run
in float32 outside it, and only at the assistant positions (a 49k-vocabulary head over every
prompt token would cost more than the blocks). AdamW, linear warmup then decay, grad-norm clip
1.0. Each step draws half its batch from each task's pool (cycling shuffled pools, seeded).

A prompt longer than `max_length` minus its target keeps its first HEAD_TOKENS tokens (chat
header, task tag) and its tail (end of the text, the question, the assistant header): the middle
of the text goes, counted in metrics n_train_truncated / n_test_truncated. Generation at
evaluation reads the whole prompt.

Evaluation, on the held-out rows: loss and perplexity = token-mean CE over the assistant tokens
of their label examples and, where a row has a kept rationale, its rationale example; accuracy
= greedy answer to the "[label]" prompt, parsed with domain.parse_answer. The teacher's accuracy
is its chain-of-thought accuracy from synthesis (`correct`); `teacher_direct_accuracy` is the
teacher answering the same "[label]" prompt. "After" numbers are measured on the saved bf16
student, the model that is registered and served.
"""

from __future__ import annotations

import copy
import csv
import math
import random
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from domains import get_domain
from domains.base import Domain
from tasks import models
from tasks.losses import forward_kl, token_cross_entropy
from tasks.params import Distill, Params, stage_dir
from tasks.records import read_jsonl, write_json, write_jsonl

PARAMS = ("distill", "synthesize.teacher")  # the params.yaml keys this stage reads (dvc.yaml too)
LABEL, RATIONALE = "label", "rationale"
TAGS = {LABEL: "[label] ", RATIONALE: "[rationale] "}  # task prefixes of the user turn
ANSWER = "Answer:"  # the label task's answer prefix, what domain.parse_answer reads
HEAD_TOKENS = 32  # a too-long prompt keeps its first 32 tokens (chat header) and its tail
WARMUP = 0.1  # share of the steps with a linearly rising learning rate
CLIP = 1.0
TEACHER_CACHE_MB = 2048  # memoised teacher logits (4 MB per 20-token rationale at a 49k vocabulary)
EVAL_BATCH = 16
HISTORY_FIELDS = ("step", "loss", "kd", "ce", "label_loss", "rationale_loss", "lr", "tokens", "seconds")


# ---------------------------------------------------------------------------------------------
# Examples (pure): record -> prompts and token ids


@dataclass
class Example:
    task: str  # LABEL or RATIONALE
    record_id: str
    prompt_ids: list[int]
    target_ids: list[int]  # the assistant's tokens, end-of-turn token last

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.target_ids)


def gold_label(domain: Domain, record: dict) -> str:
    """The record's label in the canonical form `parse_answer` returns."""
    label = domain.normalize_label(str(record["label"]))
    return label if label is not None else str(record["label"])


def task_prompt(domain: Domain, tok, record: dict, task: str = LABEL) -> str:
    """The chat-formatted user turn of `task` for a record, ready for the assistant's reply."""
    return models.chat_prompt(tok, TAGS[task] + domain.question(record))


def make_example(domain: Domain, tok, record: dict, task: str, max_length: int) -> tuple[Example, bool]:
    """One training example and whether its prompt was cut to fit `max_length` tokens."""
    target = f"{ANSWER} {gold_label(domain, record)}" if task == LABEL else record["rationale"].strip()
    prompt_ids = tok(task_prompt(domain, tok, record, task), add_special_tokens=False)["input_ids"]
    target_ids = tok(target, add_special_tokens=False)["input_ids"][: max_length // 2 - 1] + [tok.eos_token_id]
    budget = max_length - len(target_ids)
    cut = len(prompt_ids) > budget
    if cut:  # keep the chat header and the tail (the question and the assistant header)
        head = min(HEAD_TOKENS, budget // 4)
        prompt_ids = prompt_ids[:head] + prompt_ids[len(prompt_ids) - (budget - head) :]
    return Example(task, str(record["id"]), prompt_ids, target_ids), cut


def build_examples(domain: Domain, tok, rows: list[dict], max_length: int) -> tuple[dict[str, list[Example]], int]:
    """Label examples for every row, rationale examples for rows with one; and the cut count."""
    pools: dict[str, list[Example]] = {LABEL: [], RATIONALE: []}
    cut = 0
    for row in rows:
        for task in (LABEL, RATIONALE):
            if task == RATIONALE and not (row.get("rationale") or "").strip():
                continue
            example, was_cut = make_example(domain, tok, row, task, max_length)
            pools[task].append(example)
            cut += was_cut
    return pools, cut


def collate(examples: list[Example], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-padded `input_ids`, `attention_mask` and `target_mask` `(B, L)`; `task` `(B,)`.

    target_mask[b, t] = 1 where token t of row b is an assistant token (what the loss scores).
    """
    width = max(e.length for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    target = torch.zeros_like(ids)
    for b, e in enumerate(examples):
        p, t = len(e.prompt_ids), len(e.target_ids)
        ids[b, : p + t] = torch.tensor(e.prompt_ids + e.target_ids)
        attention[b, : p + t] = 1
        target[b, p : p + t] = 1
    task = torch.tensor([e.task == RATIONALE for e in examples], dtype=torch.long)
    return {"input_ids": ids.to(device), "attention_mask": attention.to(device), "target_mask": target.to(device),
            "task": task.to(device)}


# ---------------------------------------------------------------------------------------------
# Student initialisation: layer dropping


def kept_layers(n_layers: int, keep_first: int, keep_last: int) -> list[int]:
    """Indices of the teacher blocks the student keeps: the first `keep_first` and last `keep_last`."""
    if keep_first + keep_last >= n_layers:
        return list(range(n_layers))
    return list(range(keep_first)) + list(range(n_layers - keep_last, n_layers))


def init_student(teacher, keep: list[int]):
    """A copy of `teacher` with only the decoder blocks `keep`, re-indexed for the KV cache.

    Llama-style models (`model.model.layers`): sets config.num_hidden_layers, subsets
    config.layer_types when present, and renumbers each block's `layer_idx`.
    """
    layers = getattr(teacher.base_model, "layers", None)
    if layers is None:
        raise ValueError(f"distill: cannot drop layers of {type(teacher).__name__} (no base_model.layers)")
    if not keep or any(i < 0 or i >= len(layers) for i in keep):
        raise ValueError(f"distill: layer indices {keep} out of range for {len(layers)} blocks")
    kept = torch.nn.ModuleList(layers[i] for i in keep)
    teacher.base_model.layers, original = kept, teacher.base_model.layers
    try:
        student = copy.deepcopy(teacher)  # copies only the kept blocks
    finally:
        teacher.base_model.layers = original
    config = student.config
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[i] for i in keep]
    config.num_hidden_layers = len(keep)
    for new, block in enumerate(student.base_model.layers):
        for module in (block, getattr(block, "self_attn", None)):
            if module is not None and hasattr(module, "layer_idx"):
                module.layer_idx = new
    return student


# ---------------------------------------------------------------------------------------------
# Forward passes and losses


def _autocast(device: torch.device, enabled: bool = True):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def target_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float32 logits `(N, V)` at the N positions that predict an assistant token, their gold
    tokens `(N,)` and task flags `(N,)`. Blocks under bf16 autocast; the head in float32 outside."""
    device = batch["input_ids"].device
    with _autocast(device):
        hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    predicts = batch["target_mask"][:, 1:].bool()  # position t predicts token t + 1
    h = hidden[:, :-1][predicts].float()  # (N, H)
    head = model.get_output_embeddings()
    logits = torch.nn.functional.linear(h, head.weight.float(), None if head.bias is None else head.bias.float())
    targets = batch["input_ids"][:, 1:][predicts]
    task = batch["task"][:, None].expand_as(predicts)[predicts]
    return logits, targets, task


def task_weights(params: Distill, has_rationale: bool) -> dict[str, float]:
    """Step-by-step task weights; with no rationale pool the label task gets all the weight."""
    a = params.rationale_weight if has_rationale else 0.0
    return {LABEL: 1.0 - a, RATIONALE: a}


def multitask_loss(
    s_logits: torch.Tensor, t_logits: torch.Tensor, targets: torch.Tensor, task: torch.Tensor,
    params: Distill, weights: dict[str, float],
) -> dict[str, torch.Tensor]:
    """Total loss and its parts: sum_task w_task * (kd_weight * KD + ce_weight * CE)."""
    out = {"loss": s_logits.new_zeros(()), "kd": s_logits.new_zeros(()), "ce": s_logits.new_zeros(())}
    for flag, name in ((0, LABEL), (1, RATIONALE)):
        sel = task == flag
        if not sel.any() or weights[name] == 0:
            out[f"{name}_loss"] = s_logits.new_zeros(())
            continue
        kd = forward_kl(s_logits[sel], t_logits[sel], params.temperature) if params.kd_weight else s_logits.new_zeros(())
        ce = token_cross_entropy(s_logits[sel], targets[sel])
        part = params.kd_weight * kd + params.ce_weight * ce
        out[f"{name}_loss"] = part
        out["loss"] = out["loss"] + weights[name] * part
        out["kd"] = out["kd"] + weights[name] * kd
        out["ce"] = out["ce"] + weights[name] * ce
    return out


# ---------------------------------------------------------------------------------------------
# Training


def _cycle(pool: list[Example], rng: random.Random):
    """Endless shuffled passes over `pool` (empty pool: nothing)."""
    while pool:
        order = pool[:]
        rng.shuffle(order)
        yield from order


class TeacherLogits:
    """The frozen teacher's float32 logits at each example's assistant positions, memoised.

    Online KD recomputes them whenever an example is drawn again; the teacher is frozen and
    deterministic, so the second forward pass over the same ~400-token prompt is pure waste
    (with 40 steps of 4 rationale examples and ~40 kept rationales, each is drawn ~4 times).
    Kept in memory up to `budget_mb`; past that, examples are recomputed as usual.
    """

    def __init__(self, teacher, pad_id: int, budget_mb: float = TEACHER_CACHE_MB):
        self.teacher, self.pad_id = teacher, pad_id
        self.budget, self.used = budget_mb * 2**20, 0
        self.cache: dict[int, torch.Tensor] = {}  # id(example) -> (len(target_ids), V)
        self.computed = 0  # examples the teacher ran on

    @torch.no_grad()
    def __call__(self, examples: list[Example], device) -> torch.Tensor:
        """Logits `(N, V)` in the order `target_logits` returns the student's."""
        new = {id(e): e for e in examples if id(e) not in self.cache}
        fresh = {}
        if new:
            batch = collate(list(new.values()), self.pad_id, device)
            logits, _, _ = target_logits(self.teacher, batch)
            parts = logits.split([len(e.target_ids) for e in new.values()])
            for key, part in zip(new, parts):
                fresh[key] = part
                if self.used + part.numel() * part.element_size() <= self.budget:
                    self.cache[key] = part
                    self.used += part.numel() * part.element_size()
            self.computed += len(new)
        return torch.cat([self.cache.get(id(e), fresh.get(id(e))) for e in examples])


def train(student, teacher, pools: dict[str, list[Example]], params: Distill, pad_id: int) -> list[dict]:
    """Train `student` in place for params.steps; one history row per step."""
    device = next(student.parameters()).device
    torch.manual_seed(params.seed)
    rng = random.Random(params.seed)
    has_rationale = bool(pools[RATIONALE]) and params.rationale_weight > 0
    weights = task_weights(params, has_rationale)
    n_label = max(1, math.ceil(params.batch_size / 2)) if has_rationale else params.batch_size
    n_rationale = max(1, params.batch_size - n_label) if has_rationale else 0
    draws = {LABEL: _cycle(pools[LABEL], rng), RATIONALE: _cycle(pools[RATIONALE], rng)}

    optimizer = torch.optim.AdamW(student.parameters(), lr=params.lr, weight_decay=0.0)
    warmup = max(1, round(WARMUP * params.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (params.steps - s) / max(1, params.steps - warmup))
    )
    student.train()
    teacher.eval()
    teacher_logits = TeacherLogits(teacher, pad_id)
    history = []
    started = time.perf_counter()
    bar = tqdm(range(1, params.steps + 1), desc="distill", unit="step")
    for step in bar:
        examples = [next(draws[LABEL]) for _ in range(n_label)] + [next(draws[RATIONALE]) for _ in range(n_rationale)]
        batch = collate(examples, pad_id, device)
        s_logits, targets, task = target_logits(student, batch)
        if params.kd_weight:
            t_logits = teacher_logits(examples, device)
        else:
            t_logits = s_logits.detach()  # unused: the KD term has weight 0
        losses = multitask_loss(s_logits, t_logits, targets, task, params, weights)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), CLIP)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        schedule.step()
        row = {k: round(float(v.detach()), 6) for k, v in losses.items()}
        history.append({"step": step, **row, "lr": lr, "tokens": int(batch["attention_mask"].sum()),
                        "teacher_examples": teacher_logits.computed, "seconds": round(time.perf_counter() - started, 3)})
        bar.set_postfix(loss=f"{row['loss']:.3f}", kd=f"{row['kd']:.3f}", ce=f"{row['ce']:.3f}")
    bar.close()
    student.eval()
    return history


# ---------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def heldout_loss(model, pools: dict[str, list[Example]], pad_id: int, batch_size: int = EVAL_BATCH) -> dict:
    """Token-mean CE (and perplexity) over the assistant tokens of all examples, and per task."""
    device = next(model.parameters()).device
    examples = sorted(pools[LABEL] + pools[RATIONALE], key=lambda e: e.length)
    sums = {LABEL: 0.0, RATIONALE: 0.0}
    counts = {LABEL: 0, RATIONALE: 0}
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad_id, device)
        logits, targets, task = target_logits(model, batch)
        nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        for flag, name in ((0, LABEL), (1, RATIONALE)):
            sums[name] += float(nll[task == flag].sum())
            counts[name] += int((task == flag).sum())
    total = sum(counts.values())
    loss = sum(sums.values()) / total if total else None
    out = {"loss": loss, "ppl": math.exp(loss) if total else None}
    for name in (LABEL, RATIONALE):
        out[f"{name}_loss"] = sums[name] / counts[name] if counts[name] else None
    return out


def answers(model, tok, domain: Domain, rows: list[dict], max_new_tokens: int, desc: str) -> list[dict]:
    """Greedy completion of each row's "[label]" prompt: {text, answer, correct}."""
    prompts = [task_prompt(domain, tok, r) for r in rows]
    outs = models.generate(model, tok, prompts, batch_size=EVAL_BATCH, max_new_tokens=max_new_tokens, desc=desc)
    result = []
    for row, out in zip(rows, outs):
        answer = domain.parse_answer(out["text"])
        result.append({"text": out["text"], "answer": answer, "correct": answer is not None and answer == gold_label(domain, row)})
    return result


def _accuracy(results: list[dict]) -> float | None:
    return sum(r["correct"] for r in results) / len(results) if results else None


def bf16_copy(model):
    """A bfloat16 copy for evaluation and saving (training keeps float32 weights)."""
    return copy.deepcopy(model).to(torch.bfloat16).eval()


# ---------------------------------------------------------------------------------------------
# The stage


def run(
    train_rows: list[dict], test_rows: list[dict], domain: Domain, teacher_path: str, params: Distill,
    device: str | None = None,
) -> dict:
    """Build, train and evaluate the student; returns the student (bf16), tokenizer and results."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tok = models.load_tokenizer(teacher_path)
    pad_id = tok.pad_token_id
    train_pools, train_cut = build_examples(domain, tok, train_rows, params.max_length)
    test_pools, test_cut = build_examples(domain, tok, test_rows, params.max_length)
    if not train_pools[LABEL]:
        raise ValueError("distill: no training rows")

    teacher = models.load_causal_lm(teacher_path, "float32", str(device))
    keep = kept_layers(teacher.config.num_hidden_layers, params.keep_first, params.keep_last)
    student = init_student(teacher, keep)  # float32 master weights
    teacher = teacher.to(torch.bfloat16)  # inference only

    results: dict = {"kept_layers": keep, "teacher_layers": teacher.config.num_hidden_layers}
    results["teacher"] = heldout_loss(teacher, test_pools, pad_id)
    direct = answers(teacher, tok, domain, test_rows, params.eval_max_new_tokens, "teacher [label]")
    before_model = bf16_copy(student)
    results["before"] = heldout_loss(before_model, test_pools, pad_id)
    before = answers(before_model, tok, domain, test_rows, params.eval_max_new_tokens, "student before")
    del before_model

    t0 = time.perf_counter()
    history = train(student, teacher, train_pools, params, pad_id)
    train_seconds = time.perf_counter() - t0
    del teacher

    final = bf16_copy(student)
    del student
    results["after"] = heldout_loss(final, test_pools, pad_id)
    after = answers(final, tok, domain, test_rows, params.eval_max_new_tokens, "student after")

    predictions = [
        {
            "id": row["id"],
            "groups": row.get("groups") or {},
            "label": gold_label(domain, row),
            "student_answer": a["answer"],
            "student_correct": a["correct"],
            "student_output": a["text"],
            "student_before_answer": b["answer"],
            "student_before_correct": b["correct"],
            "teacher_answer": row.get("teacher_answer"),
            "teacher_correct": bool(row.get("correct")),
            "teacher_direct_answer": d["answer"],
        }
        for row, a, b, d in zip(test_rows, after, before, direct)
    ]
    tokens = sum(h["tokens"] for h in history)
    last = history[-1]
    metrics = {
        "teacher_loss": results["teacher"]["loss"],
        "teacher_ppl": results["teacher"]["ppl"],
        "student_before_loss": results["before"]["loss"],
        "student_before_ppl": results["before"]["ppl"],
        "student_loss": results["after"]["loss"],
        "student_ppl": results["after"]["ppl"],
        "teacher_label_loss": results["teacher"]["label_loss"],
        "student_before_label_loss": results["before"]["label_loss"],
        "student_label_loss": results["after"]["label_loss"],
        "teacher_rationale_loss": results["teacher"]["rationale_loss"],
        "student_rationale_loss": results["after"]["rationale_loss"],
        "teacher_accuracy": sum(bool(r.get("correct")) for r in test_rows) / len(test_rows) if test_rows else None,
        "teacher_direct_accuracy": _accuracy(direct),
        "student_before_accuracy": _accuracy(before),
        "student_accuracy": _accuracy(after),
        "train_seconds": round(train_seconds, 3),
        "seconds_per_step": round(train_seconds / params.steps, 4),
        "tokens_per_second": round(tokens / train_seconds, 1) if train_seconds else None,
        "steps": params.steps,
        "teacher_forward_examples": last["teacher_examples"],
        "n_train_label": len(train_pools[LABEL]),
        "n_train_rationale": len(train_pools[RATIONALE]),
        "n_train_truncated": train_cut,  # examples whose prompt lost the middle of its text
        "n_test_truncated": test_cut,
        "n_test": len(test_rows),
        "kd_final": last["kd"],
        "ce_final": last["ce"],
        "loss_first": history[0]["loss"],
        "loss_final": last["loss"],
        "teacher_layers": results["teacher_layers"],
        "student_layers": len(keep),
        "student_parameters": sum(p.numel() for p in final.parameters()),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    return {"student": final, "tokenizer": tok, "kept_layers": keep, "metrics": metrics, "history": history,
            "predictions": predictions}


def write_history(path: Path, history: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


def main(domain: str, params: Params, root: Path) -> dict:
    """Read the condensed train set and held-out rows, distill, write the student and reports."""
    dom = get_domain(domain)
    train_rows = read_jsonl(stage_dir(root, domain, "condense") / "train.jsonl")
    test_rows = read_jsonl(stage_dir(root, domain, "synthesize") / "test.jsonl")
    spec = params.synthesize.teacher
    result = run(train_rows, test_rows, dom, models.resolve_model(spec), params.distill)

    out = stage_dir(root, domain, "distill")
    student_dir = out / "student"
    result["student"].save_pretrained(student_dir)
    result["tokenizer"].save_pretrained(student_dir)
    write_json(student_dir / "stillhouse.json", {
        "prompt_format": TAGS[LABEL] + "<question>",
        "answer_prefix": ANSWER,
        "teacher": spec,
        "kept_layers": result["kept_layers"],
        "domain": domain,
    })
    write_json(out / "metrics.json", result["metrics"])
    write_history(out / "history.csv", result["history"])
    write_jsonl(out / "predictions.jsonl", result["predictions"])
    m = result["metrics"]
    return {k: m[k] for k in ("teacher_accuracy", "student_before_accuracy", "student_accuracy", "student_ppl",
                              "train_seconds")}
