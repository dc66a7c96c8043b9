"""Distill the teacher into a smaller student: multi-task KD (distilling step-by-step), on- and off-policy.

    stillhouse stage distill --domain healthcare       # what `dvc repro distill@healthcare` runs
    accelerate launch --config_file configs/accelerate_multi_gpu.yaml -m tasks.distill --domain healthcare

Inputs:  data/<domain>/condense/train.jsonl   training rows (record + teacher rationale, if kept;
                                              teacher_topk when synthesize.topk_logprobs > 0)
         data/<domain>/synthesize/test.jsonl  held-out rows with the teacher's answers
         synthesize.teacher                   the teacher spec (tasks/models.resolve_model)
Outputs: data/<domain>/distill/student/       save_pretrained student (bf16) + tokenizer +
                                              stillhouse.json (prompt format, kept layers, teacher)
         data/<domain>/distill/metrics.json   held-out loss / perplexity / accuracy of teacher,
                                              student before and after training; speed; loss terms
         data/<domain>/distill/history.csv    per step: every loss term unweighted and weighted, lr
         data/<domain>/distill/eval.csv       held-out loss by step: validation evals, test before/after
         data/<domain>/distill/predictions.jsonl  one row per held-out record (fairness reads it)
         data/<domain>/distill/checkpoints/   while training (checkpoint_every); removed when done
Params:  distill.* (tasks/params.py Distill), synthesize.teacher.

Student: tasks/student.py (the teacher's first and last blocks by default; other selections, any
model sharing the tokenizer, LoRA).

Tasks (Hsieh et al., 2023, "Distilling Step-by-Step!", arXiv:2305.02301, Eq. 3), per record:
  label      user "[label] <question>"     -> assistant "Answer: <gold label>"
  rationale  user "[rationale] <question>" -> assistant "<teacher rationale>" (kept rows only)
  L = (1 - rationale_weight) * L_label + rationale_weight * L_rationale     (L_label alone when
      no row has a rationale), each task's
  L_task = kd_weight * D_T(p_teacher, q_student) + ce_weight * CE(gold tokens)
  (+ hidden_weight * L_hidden over both tasks)
on the assistant tokens only (the end-of-turn token included). D is `divergence` at temperature
T, scaled by T^2 (tasks/losses.py: forward KL by default, Hinton et al., 2015). history.csv
carries each term unweighted (kd, ce, hidden) and as it enters the loss (kd_weighted = kd_weight
* kd, ...), so the weights can be read against the magnitudes they multiply.

Teacher targets, `teacher_source`:
  online  the teacher's logits, computed under no_grad. Its final hidden states at the assistant
          positions are memoised per example (the teacher is frozen: a redrawn example needs no
          second forward pass) and projected by its head chunk by chunk, like the student's.
  topk    offline: the k most likely tokens and log-probs stored by synthesize per teacher
          output token (topk_logprobs > 0). The KD term runs over those k tokens plus one tail
          bucket holding the remaining mass (losses.topk_log_probs; no temperature: T = 1). A
          stored distribution is used where the target tokens match the teacher's own output
          tokens: the rationale (a prefix of the teacher's output) and "Answer: <label>" (its
          suffix, when the teacher's answer is the gold label); other positions get CE only.
          Counted in metrics (n_topk_positions, n_topk_unaligned).
On-policy (GKD, Agarwal et al., 2024, arXiv:2306.13649): with probability `gkd_lambda` a step
replaces the batch's targets by the student's own sampled continuations of the same prompts
(no_grad, `gkd_temperature`, up to `gkd_max_new_tokens`), scored by the online teacher; that
step's loss is kd_weight * `gkd_divergence` (generalized JSD with `beta` by default), no CE.
Hidden-state alignment (FitNets, Romero et al., 2015): MSE or cosine distance between student
and teacher hidden states (`hidden_layers` pairs of hidden_states indices, default the last of
each) at the assistant positions, through a learned linear projection when the widths differ,
trained with the student (not saved with it).

Memory: the head projection and every loss run in float32, outside autocast, over chunks of
`chunk_size` assistant positions (losses.chunked_head_loss): the (positions x vocabulary)
logits of the whole batch never exist at once. Forward passes run under bf16 autocast (CUDA
when present, else CPU). AdamW, linear warmup then decay, grad-norm clip 1.0. Each step draws
half its batch from each task's pool (shuffled passes, seeded per pass).

Checkpoints: every `checkpoint_every` steps the student's trainable weights, optimizer,
scheduler, RNG states, the data-order cursors, the teacher memo, early-stopping state and the
history go to checkpoints/<key>.pt (written to a temporary file, then renamed: atomic). <key>
hashes the params, the examples and the initial student weights; a run with the same key
resumes from it and reaches the same weights as an uninterrupted run (tests/test_distill.py
kills one). Early stopping: with eval_every > 0, `val_fraction` of the training rows are held
out; their loss every eval_every steps; after `patience` evaluations without a new best the run
stops, and the best weights are restored.

Multi-GPU: under `accelerate launch` (WORLD_SIZE > 1) each process takes its share of every
step's batch and the gradients are averaged with an all-reduce before the optimizer step; only
the main process writes. A single process never touches accelerate (it measured no faster).

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
import hashlib
import json
import math
import os
import random
import resource
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from domains import get_domain
from domains.base import Domain
from tasks import models
from tasks.losses import chunked_head_loss, divergence, token_cross_entropy, token_divergence, topk_log_probs
from tasks.params import Distill, Params, stage_dir
from tasks.records import read_jsonl, write_json, write_jsonl
from tasks.student import finalize_student, init_student, kept_layers, select_layers  # noqa: F401 (API)

PARAMS = ("distill", "synthesize.teacher")  # the params.yaml keys this stage reads (dvc.yaml too)
LABEL, RATIONALE = "label", "rationale"
TASKS = (LABEL, RATIONALE)  # task flag 0, 1 in batches
TAGS = {LABEL: "[label] ", RATIONALE: "[rationale] "}  # task prefixes of the user turn
ANSWER = "Answer:"  # the label task's answer prefix, what domain.parse_answer reads
HEAD_TOKENS = 32  # a too-long prompt keeps its first 32 tokens (chat header) and its tail
WARMUP = 0.1  # share of the steps with a linearly rising learning rate
CLIP = 1.0
TEACHER_CACHE_MB = 2048  # memoised teacher hidden states (~1 kB per token at width 576, bf16)
EVAL_BATCH = 16
TOPK_MIN_MATCH = 0.9  # share of a teacher output's tokens that must lie in their stored top-k
HISTORY_FIELDS = ("step", "loss", "kd", "ce", "hidden", "kd_weighted", "ce_weighted", "hidden_weighted",
                  "label_loss", "rationale_loss", "label_kd", "label_ce", "rationale_kd", "rationale_ce",
                  "on_policy", "lr", "grad_norm", "tokens", "teacher_examples", "seconds")
EVAL_FIELDS = ("step", "split", "loss", "ppl", "label_loss", "rationale_loss")


# ---------------------------------------------------------------------------------------------
# Examples (pure): record -> prompts and token ids


@dataclass
class Example:
    task: str  # LABEL or RATIONALE
    record_id: str
    prompt_ids: list[int]
    target_ids: list[int]  # the assistant's tokens, end-of-turn token last
    # Offline KD targets: (ids, logprobs), entry j = the teacher's top-k at the position that
    # predicts target_ids[j]; shorter than target_ids (or None): the rest gets no KD term.
    teacher_topk: tuple[list[list[int]], list[list[float]]] | None = None

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
    example = Example(task, str(record["id"]), prompt_ids, target_ids)
    if record.get("teacher_topk") and record.get("teacher_output"):
        example.teacher_topk = align_topk(tok, record["teacher_output"], record["teacher_topk"], target_ids, task)
    return example, cut


def align_topk(tok, output: str, topk: dict, target_ids: list[int], task: str):
    """The stored top-k of the teacher's output tokens that the target's tokens reproduce, or None.

    synthesize stores one top-k per generated token of `output`, after the prompt the teacher
    saw. The rationale target is a prefix of `output` (matched from the start), the label target
    "Answer: <label>" its suffix (matched from the end). Re-tokenising the decoded text gives
    the generated tokens back in nearly every case; the check that >= TOPK_MIN_MATCH of them lie
    in their own stored top-k rejects rows where it does not (or where stripping shifted them).
    """
    ids, logprobs = topk["ids"], topk["logprobs"]
    out = tok(output, add_special_tokens=False)["input_ids"]
    shift = len(ids) - len(out)  # >0: leading whitespace tokens were stripped from the decoded text
    if shift < 0 or not out:
        return None
    if sum(t in ids[j + shift] for j, t in enumerate(out)) < TOPK_MIN_MATCH * len(out):
        return None
    target = target_ids[:-1]  # the end-of-turn token has no stored distribution here
    if task == RATIONALE:
        n = 0
        while n < min(len(target), len(out)) and target[n] == out[n]:
            n += 1
        return (ids[shift : shift + n], logprobs[shift : shift + n]) if n else None
    if len(target) <= len(out) and out[len(out) - len(target) :] == target:
        return ids[len(ids) - len(target) :], logprobs[len(ids) - len(target) :]
    return None


def build_examples(domain: Domain, tok, rows: list[dict], max_length: int) -> tuple[dict[str, list[Example]], int]:
    """Label examples for every row, rationale examples for rows with one; and the cut count."""
    pools: dict[str, list[Example]] = {LABEL: [], RATIONALE: []}
    cut = 0
    for row in rows:
        for task in TASKS:
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
# Forward passes


def _autocast(device: torch.device, enabled: bool = True):
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)


def assistant_hidden(model, batch: dict[str, torch.Tensor], layers: tuple[int, ...] = ()):
    """Float32 hidden states `(N, H)` at the N positions that predict an assistant token, their
    gold tokens `(N,)`, task flags `(N,)`, and `{i: (N, H)}` of hidden_states[i] for `layers`.

    The blocks run under bf16 autocast; the head is left to the caller (float32, chunked).
    """
    device = batch["input_ids"].device
    with _autocast(device):
        out = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               output_hidden_states=bool(layers))
    predicts = batch["target_mask"][:, 1:].bool()  # position t predicts token t + 1
    h = out[0][:, :-1][predicts].float()  # (N, H)
    extra = {i: out.hidden_states[i][:, :-1][predicts].float() for i in layers}
    targets = batch["input_ids"][:, 1:][predicts]
    task = batch["task"][:, None].expand_as(predicts)[predicts]
    return h, targets, task, extra


def _head(model) -> tuple[torch.Tensor, torch.Tensor | None]:
    head = model.get_output_embeddings()
    return head.weight, head.bias


def target_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float32 logits `(N, V)` at the N assistant-predicting positions, gold tokens `(N,)`, task
    flags `(N,)` (all at once: for small batches and tests; training goes through chunks)."""
    h, targets, task, _ = assistant_hidden(model, batch)
    weight, bias = _head(model)
    return F.linear(h, weight.float(), None if bias is None else bias.float()), targets, task


class TeacherStates:
    """The frozen teacher at each example's assistant positions, memoised: hidden states, and
    float32 logits while they fit in `budget_mb`.

    The teacher is frozen and deterministic, so a second forward pass over a redrawn example is
    pure waste (with 40 steps of 4 rationale examples and ~40 kept rationales, each is drawn ~4
    times); so is a second head projection. Hidden states cost 576 numbers per token against
    49,152 for logits: past the budget only they are kept, and the head runs per loss chunk.
    Logits are projected one example at a time, so a checkpoint (which holds the hidden states)
    rebuilds them bit for bit.
    """

    def __init__(self, teacher, pad_id: int, layers: tuple[int, ...] = (), budget_mb: float = TEACHER_CACHE_MB):
        self.teacher, self.pad_id, self.layers = teacher, pad_id, tuple(layers)
        weight, bias = _head(teacher)
        self.weight = weight.detach().float()  # (V, H): one float32 copy, not one per chunk
        self.bias = None if bias is None else bias.detach().float()
        self.budget, self.used = budget_mb * 2**20, 0
        self.cache: dict[int, dict[int | str, torch.Tensor]] = {}  # id(example) -> {"final"|"logits"|layer: (T, .)}
        self.computed = 0  # examples the teacher ran on

    def _add_logits(self, entry: dict) -> None:
        size = entry["final"].shape[0] * self.weight.shape[0] * 4
        if self.used + size <= self.budget:
            entry["logits"] = F.linear(entry["final"].float(), self.weight, self.bias)
            self.used += size

    @torch.no_grad()
    def __call__(self, examples: list[Example], device, memo: bool = True) -> TeacherTargets:
        """Dense targets (and hidden_states[layer] for alignment) in `assistant_hidden` order."""
        new = {id(e): e for e in examples if id(e) not in self.cache}
        fresh = {}
        if new:
            batch = collate(list(new.values()), self.pad_id, device)
            h, _, _, extra = assistant_hidden(self.teacher, batch, self.layers)
            sizes = [len(e.target_ids) for e in new.values()]
            parts = zip(h.to(torch.bfloat16).split(sizes), *(extra[i].to(torch.bfloat16).split(sizes) for i in self.layers))
            for key, (final, *layer_parts) in zip(new, parts):
                entry = {"final": final.clone(), **{i: x.clone() for i, x in zip(self.layers, layer_parts)}}
                if memo:
                    self.cache[key] = entry
                    self._add_logits(entry)
                fresh[key] = entry
            self.computed += len(new)
        got = [self.cache.get(id(e)) or fresh[id(e)] for e in examples]
        spans, start = [], 0
        for g in got:
            spans.append((start, start + len(g["final"]), g.get("logits")))
            start += len(g["final"])
        return TeacherTargets(hidden=torch.cat([g["final"] for g in got]).float(), weight=self.weight, bias=self.bias,
                              spans=spans, layers={i: torch.cat([g[i] for g in got]).float() for i in self.layers})

    def state(self, index: dict[int, tuple[str, int]]) -> dict:
        """The memo for a checkpoint: hidden states only, keyed by (task, position in pool)."""
        return {index[k]: {n: t for n, t in v.items() if n != "logits"} for k, v in self.cache.items() if k in index}

    def load(self, state: dict, pools: dict[str, list[Example]]) -> None:
        for (task, i), entry in state.items():
            entry = {k: v.to(self.weight.device) for k, v in entry.items()}
            self.cache[id(pools[task][i])] = entry
            self._add_logits(entry)


@torch.no_grad()
def with_teacher_topk(teacher, examples: list[Example], k: int, pad_id: int, batch_size: int = EVAL_BATCH) -> list[Example]:
    """Copies of `examples` carrying the teacher's top-k log-probs at every target position (offline KD)."""
    device = next(teacher.parameters()).device
    out = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        logits, _, _ = target_logits(teacher, collate(chunk, pad_id, device))
        lp, ids = torch.log_softmax(logits, -1).topk(k, dim=-1)
        for e, i, v in zip(chunk, ids.split([len(e.target_ids) for e in chunk]), lp.split([len(e.target_ids) for e in chunk])):
            out.append(replace(e, teacher_topk=(i.tolist(), v.tolist())))
    return out


# ---------------------------------------------------------------------------------------------
# Losses


def task_weights(params: Distill, has_rationale: bool) -> dict[str, float]:
    """Step-by-step task weights; with no rationale pool the label task gets all the weight."""
    a = params.rationale_weight if has_rationale else 0.0
    return {LABEL: 1.0 - a, RATIONALE: a}


def multitask_loss(
    s_logits: torch.Tensor, t_logits: torch.Tensor, targets: torch.Tensor, task: torch.Tensor,
    params: Distill, weights: dict[str, float],
) -> dict[str, torch.Tensor]:
    """Total loss and its parts from dense logits `(N, V)`: sum_task w_task * (kd_weight * KD + ce_weight * CE).

    The plain reference of `head_loss` (tests check the chunked path against it)."""
    out = {"loss": s_logits.new_zeros(()), "kd": s_logits.new_zeros(()), "ce": s_logits.new_zeros(())}
    for flag, name in enumerate(TASKS):
        sel = task == flag
        if not sel.any() or weights[name] == 0:
            out[f"{name}_loss"] = s_logits.new_zeros(())
            continue
        kd = divergence(params.divergence, s_logits[sel], t_logits[sel], params.temperature,
                        beta=params.beta, alpha=params.skew_alpha) if params.kd_weight else s_logits.new_zeros(())
        ce = token_cross_entropy(s_logits[sel], targets[sel])
        part = params.kd_weight * kd + params.ce_weight * ce
        out[f"{name}_loss"] = part
        out["loss"] = out["loss"] + weights[name] * part
        out["kd"] = out["kd"] + weights[name] * kd
        out["ce"] = out["ce"] + weights[name] * ce
    return out


@dataclass
class TeacherTargets:
    """What the KD term compares the student with, at the N scored positions.

    Dense (online): `hidden` `(N, H_t)` and the teacher head; sparse (offline): `ids` and
    `logprobs` `(N, k)`, with `has` `(N,)` marking the positions that carry a stored distribution.
    """

    hidden: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    spans: list | None = None  # per example (start, stop, memoised logits or None), in position order
    layers: dict | None = None  # hidden_states[i] `(N, H_i)` for hidden alignment
    ids: torch.Tensor | None = None
    logprobs: torch.Tensor | None = None
    has: torch.Tensor | None = None

    def logits(self, chunk: slice) -> torch.Tensor:
        """Teacher logits `(n, V)` of one chunk: memoised rows where there are, else its head now."""
        if not self.spans:
            return F.linear(self.hidden[chunk], self.weight, self.bias)
        parts = []
        for a, b, cached in self.spans:
            lo, hi = max(a, chunk.start), min(b, chunk.stop)
            if lo < hi:
                parts.append(cached[lo - a : hi - a] if cached is not None else
                             F.linear(self.hidden[lo:hi], self.weight, self.bias))
        return torch.cat(parts)

    def log_probs(self, s_logits: torch.Tensor, chunk: slice, temperature: float):
        """(student, teacher) log-probs of one chunk, over the vocabulary or top-k + tail."""
        if self.ids is not None:
            return topk_log_probs(s_logits, self.ids[chunk], self.logprobs[chunk])
        t = self.logits(chunk)
        return torch.log_softmax(s_logits / temperature, -1), torch.log_softmax(t / temperature, -1)


def topk_targets(examples: list[Example], device) -> TeacherTargets:
    """Stack the examples' stored top-k in `assistant_hidden` order (positions without one: has=False)."""
    k = next((len(e.teacher_topk[0][0]) for e in examples if e.teacher_topk and e.teacher_topk[0]), 1)
    ids, lps, has = [], [], []
    for e in examples:
        n = len(e.target_ids)
        got_ids, got_lp = e.teacher_topk or ([], [])
        got_ids, got_lp = got_ids[:n], got_lp[:n]
        if any(len(row) != k for row in got_ids):
            raise ValueError(f"distill: teacher_topk rows of different k in one batch (expected {k})")
        pad = n - len(got_ids)
        ids += got_ids + [[0] * k] * pad
        lps += got_lp + [[0.0] * k] * pad
        has += [True] * len(got_ids) + [False] * pad
    return TeacherTargets(ids=torch.tensor(ids, dtype=torch.long, device=device),
                          logprobs=torch.tensor(lps, dtype=torch.float32, device=device),
                          has=torch.tensor(has, dtype=torch.bool, device=device))


def head_loss(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, task: torch.Tensor,
    teacher: TeacherTargets | None, params: Distill, weights: dict[str, float], kind: str, ce: bool = True,
) -> dict[str, torch.Tensor]:
    """The multi-task KD + CE loss through the student's head, chunk by chunk; and every term.

    Returns "loss" (differentiable in hidden, weight, bias) and, detached, the per-task means
    `<task>_kd`, `<task>_ce` and their task-weighted sums "kd", "ce". KD is T^2-scaled for the
    dense teacher, unscaled (T = 1) for stored top-k; CE is left out when `ce` is False.
    """
    use_kd = teacher is not None and params.kd_weight > 0
    dense = use_kd and teacher.ids is None
    temperature = params.temperature if dense else 1.0
    has_kd = torch.full_like(targets, use_kd, dtype=torch.bool)  # positions with a teacher distribution
    if use_kd and teacher.has is not None:
        has_kd = teacher.has
    kd_w = torch.zeros_like(hidden[:, 0])  # (N,) per-position weights, normalised per task
    ce_w = torch.zeros_like(kd_w)
    count = {}
    for flag, name in enumerate(TASKS):
        sel = task == flag
        count[name] = (int(sel.sum()), int((sel & has_kd).sum()))
        if weights[name] == 0:
            continue
        if ce and params.ce_weight and count[name][0]:
            ce_w[sel] = params.ce_weight * weights[name] / count[name][0]
        if use_kd and count[name][1]:
            kd_w[sel & has_kd] = params.kd_weight * weights[name] / count[name][1] * temperature**2
    sums = {f"{n}_{t}": hidden.new_zeros(()) for n in TASKS for t in ("kd", "ce")}

    def objective(logits: torch.Tensor, chunk: slice) -> torch.Tensor:
        value = logits.new_zeros(())
        flags = task[chunk]
        if use_kd:
            s, t = teacher.log_probs(logits, chunk, temperature)
            kd = token_divergence(kind, s, t, params.beta, params.skew_alpha)  # (n,), kd_w holds the T^2
            value = value + (kd * kd_w[chunk]).sum()
            for flag, name in enumerate(TASKS):
                sums[f"{name}_kd"] += temperature**2 * (kd.detach() * ((flags == flag) & has_kd[chunk])).sum()
        if ce:
            nll = F.cross_entropy(logits, targets[chunk], reduction="none")
            value = value + (nll * ce_w[chunk]).sum()
            for flag, name in enumerate(TASKS):
                sums[f"{name}_ce"] += (nll.detach() * (flags == flag)).sum()
        return value

    loss = chunked_head_loss(hidden, weight, bias, objective, params.chunk_size)
    out = {"loss": loss, "kd": hidden.new_zeros(()), "ce": hidden.new_zeros(())}
    for name in TASKS:
        n, n_kd = count[name]
        out[f"{name}_kd"] = sums[f"{name}_kd"] / max(n_kd, 1)
        out[f"{name}_ce"] = sums[f"{name}_ce"] / max(n, 1)
        out[f"{name}_loss"] = params.kd_weight * out[f"{name}_kd"] + (params.ce_weight * out[f"{name}_ce"] if ce else 0.0)
        if weights[name] and n:
            out["kd"] = out["kd"] + weights[name] * out[f"{name}_kd"]
            out["ce"] = out["ce"] + weights[name] * out[f"{name}_ce"]
    return out


class HiddenAlign(torch.nn.Module):
    """FitNets-style hidden-state alignment (Romero et al., 2015, arXiv:1412.6550, Eq. 3).

    For each (student, teacher) pair of hidden_states indices: distance(W s, t) at the scored
    positions, W a learned linear map (student width -> teacher width) when the widths differ,
    the identity when they match. "mse": mean squared error per element; "cosine": 1 - cos.
    """

    def __init__(self, pairs: list[tuple[int, int]], s_width: int, t_width: int, loss: str = "mse"):
        super().__init__()
        self.pairs = [tuple(p) for p in pairs] or [(-1, -1)]
        self.loss = loss
        self.proj = torch.nn.ModuleList(
            torch.nn.Linear(s_width, t_width, bias=False) if s_width != t_width else torch.nn.Identity()
            for _ in self.pairs)

    @property
    def student_layers(self) -> tuple[int, ...]:
        return tuple(s for s, _ in self.pairs)

    @property
    def teacher_layers(self) -> tuple[int, ...]:
        return tuple(t for _, t in self.pairs)

    def forward(self, student: dict[int, torch.Tensor], teacher: dict[int, torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for (s, t), proj in zip(self.pairs, self.proj):
            x, y = proj(student[s]), teacher[t]
            total = total + (F.mse_loss(x, y) if self.loss == "mse" else (1 - F.cosine_similarity(x, y, dim=-1)).mean())
        return total / len(self.pairs)


# ---------------------------------------------------------------------------------------------
# Training


class Draws:
    """Endless shuffled passes over a pool of `n`; the pass order comes from (seed, name, pass),
    so the whole state is two integers a checkpoint can hold."""

    def __init__(self, n: int, seed: int, name: str):
        self.n, self.seed, self.name = n, seed, name
        self.epoch, self.pos, self._order = 0, 0, None

    def next(self) -> int:
        if self._order is None:
            self._order = list(range(self.n))
            random.Random(f"{self.seed}:{self.name}:{self.epoch}").shuffle(self._order)
        i = self._order[self.pos]
        self.pos += 1
        if self.pos == self.n:
            self.epoch, self.pos, self._order = self.epoch + 1, 0, None
        return i

    def state(self) -> tuple[int, int]:
        return self.epoch, self.pos

    def load(self, state) -> None:
        self.epoch, self.pos = state
        self._order = None


@torch.no_grad()
def sample_continuations(student, examples: list[Example], params: Distill, pad_id: int, eos_id: int, seed: int) -> list[Example]:
    """The examples with their targets replaced by the student's own sampled continuations (GKD)."""
    device = next(student.parameters()).device
    width = max(len(e.prompt_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for b, e in enumerate(examples):  # left-padded, as decoder-only generation needs
        ids[b, width - len(e.prompt_ids) :] = torch.tensor(e.prompt_ids)
        attention[b, width - len(e.prompt_ids) :] = 1
    was_training = student.training
    student.eval()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), _autocast(device):  # seeded per step: resumable
        torch.manual_seed(seed)
        out = student.generate(input_ids=ids.to(device), attention_mask=attention.to(device), do_sample=True,
                               temperature=params.gkd_temperature, top_k=0, top_p=1.0,
                               max_new_tokens=params.gkd_max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id)
    student.train(was_training)
    result = []
    for e, row in zip(examples, out[:, width:].tolist()):
        target = row[: row.index(eos_id) + 1] if eos_id in row else row
        result.append(Example(e.task, e.record_id, e.prompt_ids, target))
    return result


def run_key(params: Distill, pools: dict[str, list[Example]], student) -> str:
    """What a checkpoint must match to be resumed: training params, examples, initial weights."""
    h = hashlib.sha256()
    settings = params.model_dump(exclude={"eval_max_new_tokens", "checkpoint_every"})
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for task in TASKS:
        for e in pools[task]:
            h.update(json.dumps([e.task, e.prompt_ids, e.target_ids, e.teacher_topk]).encode())
    with torch.no_grad():
        for name, p in student.named_parameters():
            h.update(f"{name}:{tuple(p.shape)}:{float(p.sum(dtype=torch.float64)):.10e}".encode())
    return h.hexdigest()[:16]


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file, then rename: a kill mid-write leaves the previous checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _trainable(student) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in student.named_parameters() if p.requires_grad}


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Dist:
    """This process's place in a multi-process (accelerate) launch; rank 0 of 1 otherwise."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world) if world > 1 else cls()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """All-reduce mean of the gradients (a no-op in one process)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        if not dist.is_initialized():  # accelerate / torchrun set the rendezvous variables
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))


@dataclass
class Resumable:
    """What a checkpoint restores besides the history: weights, optimizer, schedule, data order, teacher memo."""

    student: torch.nn.Module
    align: HiddenAlign | None
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    draws: dict[str, Draws]
    teacher: TeacherStates | None
    pools: dict[str, list[Example]]

    def state_dict(self) -> dict:
        index = {id(e): (task, i) for task in TASKS for i, e in enumerate(self.pools[task])}
        return {
            "student": {n: p.detach() for n, p in _trainable(self.student).items()},  # LoRA: adapters only
            "align": self.align.state_dict() if self.align is not None else None,
            "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
            "draws": {task: d.state() for task, d in self.draws.items()},
            "teacher_memo": self.teacher.state(index) if self.teacher is not None else {},
            "teacher_computed": self.teacher.computed if self.teacher is not None else 0,
            "rng": _rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["student"], strict=False)
        if self.align is not None:
            self.align.load_state_dict(state["align"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        for task, d in self.draws.items():
            d.load(state["draws"][task])
        if self.teacher is not None:
            self.teacher.load(state["teacher_memo"], self.pools)
            self.teacher.computed = state["teacher_computed"]
        _set_rng_state(state["rng"])


def _check(params: Distill, teacher, pools: dict[str, list[Example]], student) -> None:
    online = params.kd_weight and params.teacher_source == "online"
    if teacher is None and (online or params.gkd_lambda or params.hidden_weight):
        raise ValueError("distill: online KD, gkd_lambda and hidden_weight need the teacher model")
    if params.teacher_source == "topk" and params.kd_weight and not any(e.teacher_topk for p in pools.values() for e in p):
        raise ValueError("distill: teacher_source=topk but no example has teacher_topk "
                         "(run synthesize with topk_logprobs > 0 and the student's tokenizer)")
    if teacher is not None and (online or params.gkd_lambda):
        vs, vt = _head(student)[0].shape[0], _head(teacher)[0].shape[0]
        if vs != vt:
            raise ValueError(f"distill: student vocabulary {vs} != teacher's {vt}; token-level KD needs one tokenizer")


def train(student, teacher, pools: dict[str, list[Example]], params: Distill, pad_id: int, *,
          eval_pools: dict[str, list[Example]] | None = None, checkpoint_dir: str | Path | None = None,
          progress: bool = True) -> list[dict]:
    """Train `student` in place for params.steps (fewer when early stopping); one history row per step.

    eval_pools: held-out examples whose loss is measured every `eval_every` steps (rows of those
    steps add heldout_loss, heldout_ppl, ...; `patience` stops on them). checkpoint_dir: where
    checkpoints/<key>.pt is written every `checkpoint_every` steps and resumed from.
    `teacher` may be None with teacher_source=topk (no on-policy steps, no hidden alignment).
    """
    device = next(student.parameters()).device
    dist = Dist.from_env()
    _check(params, teacher, pools, student)
    if params.batch_size < dist.world:
        raise ValueError(f"distill: batch_size {params.batch_size} < {dist.world} processes (each takes a share)")
    key = run_key(params, pools, student) if checkpoint_dir is not None and params.checkpoint_every else None
    torch.manual_seed(params.seed)
    has_rationale = bool(pools[RATIONALE]) and params.rationale_weight > 0
    weights = task_weights(params, has_rationale)
    n_label = max(1, math.ceil(params.batch_size / 2)) if has_rationale else params.batch_size
    n_rationale = max(1, params.batch_size - n_label) if has_rationale else 0
    draws = {task: Draws(len(pools[task]), params.seed, task) for task in TASKS}
    eos_id = pools[LABEL][0].target_ids[-1]  # every target ends with the end-of-turn token (make_example)

    align = None
    if params.hidden_weight:
        align = HiddenAlign(params.hidden_layers, student.config.hidden_size, teacher.config.hidden_size,
                            params.hidden_loss).to(device)
    trainable = list(_trainable(student).values()) + (list(align.parameters()) if align is not None else [])
    optimizer = torch.optim.AdamW(trainable, lr=params.lr, weight_decay=0.0)
    warmup = max(1, round(WARMUP * params.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (params.steps - s) / max(1, params.steps - warmup))
    )
    teacher_states = None
    if teacher is not None and (params.teacher_source == "online" or params.gkd_lambda or align is not None):
        teacher.eval()
        teacher_states = TeacherStates(teacher, pad_id, align.teacher_layers if align is not None else ())
    resumable = Resumable(student, align, optimizer, schedule, draws, teacher_states, pools)

    history: list[dict] = []
    best = {"loss": math.inf, "step": None, "weights": None, "bad": 0}  # early stopping
    start, elapsed = 1, 0.0
    path = Path(checkpoint_dir) / f"{key}.pt" if key else None
    if path is not None and path.exists():
        state = torch.load(path, weights_only=False, map_location="cpu")  # RNG states must stay on the CPU
        resumable.load_state_dict(state)
        history, best, elapsed, start = state["history"], state["best"], state["seconds"], state["step"] + 1
        print(f"distill: resumed from {path} at step {state['step']}")

    student.train()
    started = time.perf_counter() - elapsed
    bar = tqdm(range(start, params.steps + 1), desc="distill", unit="step", disable=not progress or not dist.main,
               initial=start - 1, total=params.steps)
    for step in bar:
        examples = [pools[LABEL][draws[LABEL].next()] for _ in range(n_label)] + [
            pools[RATIONALE][draws[RATIONALE].next()] for _ in range(n_rationale)]
        on_policy = params.gkd_lambda > 0 and random.Random(f"{params.seed}:gkd:{step}").random() < params.gkd_lambda
        if on_policy:
            examples = sample_continuations(student, examples, params, pad_id, eos_id, seed=params.seed * 1_000_003 + step)
        examples = examples[dist.rank :: dist.world]
        losses = step_loss(student, teacher_states, align, examples, params, weights, on_policy, pad_id, device)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        dist.average_gradients(trainable)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, CLIP)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        schedule.step()
        row = {k: float(f"{float(v.detach()):.7g}") for k, v in losses.items() if k != "tokens"}  # 7 digits: terms can be tiny
        row.update(step=step, on_policy=int(on_policy), lr=lr, grad_norm=round(float(grad_norm), 4),
                   tokens=losses["tokens"], teacher_examples=teacher_states.computed if teacher_states else 0,
                   seconds=round(time.perf_counter() - started, 3))
        stop = False
        if eval_pools is not None and params.eval_every and (step % params.eval_every == 0 or step == params.steps):
            student.eval()
            held = heldout_loss(student, eval_pools, pad_id)
            student.train()
            row.update({f"heldout_{k}": v for k, v in held.items()})
            if held["loss"] is not None and held["loss"] < best["loss"]:
                best = {"loss": held["loss"], "step": step, "bad": 0,
                        "weights": {n: p.detach().clone() for n, p in _trainable(student).items()}}
            else:
                best["bad"] += 1
                stop = bool(params.patience) and best["bad"] >= params.patience
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", kd=f"{row['kd']:.3f}", ce=f"{row['ce']:.3f}")
        if path is not None and dist.main and step % params.checkpoint_every == 0 and step < params.steps and not stop:
            save_checkpoint(path, {"key": key, "step": step, "history": history, "best": best,
                                   "seconds": time.perf_counter() - started, **resumable.state_dict()})
        if stop:
            break
    bar.close()
    if params.patience and best["weights"] is not None and best["step"] != history[-1]["step"]:
        with torch.no_grad():  # early stopping keeps the best validated weights
            for n, p in _trainable(student).items():
                p.copy_(best["weights"][n])
    if history:
        history[-1]["best_step"] = best["step"]
    if path is not None and dist.main and path.exists():
        path.unlink()  # finished: nothing to resume
    student.eval()
    return history


def step_loss(student, teacher_states: TeacherStates | None, align: HiddenAlign | None, examples: list[Example],
              params: Distill, weights: dict[str, float], on_policy: bool, pad_id: int, device) -> dict:
    """One batch's loss with every term, unweighted and weighted (see HISTORY_FIELDS)."""
    batch = collate(examples, pad_id, device)
    layers = align.student_layers if align is not None else ()
    h, targets, task, s_extra = assistant_hidden(student, batch, layers)
    teacher, t_extra = None, {}
    if teacher_states is not None and (on_policy or params.teacher_source == "online" or align is not None):
        dense = teacher_states(examples, device, memo=not on_policy)  # student samples are drawn once
        t_extra = dense.layers
        if on_policy or params.teacher_source == "online":
            teacher = dense
    if not on_policy and params.teacher_source == "topk":
        teacher = topk_targets(examples, device)
    weight, bias = _head(student)
    kind = params.gkd_divergence if on_policy else params.divergence
    out = head_loss(h, weight, bias, targets, task, teacher, params, weights, kind, ce=not on_policy)
    out["hidden"] = align(s_extra, t_extra) if align is not None else h.new_zeros(())
    out["kd_weighted"] = params.kd_weight * out["kd"]
    out["ce_weighted"] = params.ce_weight * out["ce"] if not on_policy else h.new_zeros(())
    out["hidden_weighted"] = params.hidden_weight * out["hidden"]
    out["loss"] = out["loss"] + out["hidden_weighted"]
    out["hidden"], out["hidden_weighted"] = out["hidden"].detach(), out["hidden_weighted"].detach()
    out["tokens"] = int(batch["attention_mask"].sum())
    return out


# ---------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def heldout_loss(model, pools: dict[str, list[Example]], pad_id: int, batch_size: int = EVAL_BATCH,
                 chunk_size: int = 256) -> dict:
    """Token-mean CE (and perplexity) over the assistant tokens of all examples, and per task."""
    device = next(model.parameters()).device
    examples = sorted(pools[LABEL] + pools[RATIONALE], key=lambda e: e.length)
    sums = {LABEL: 0.0, RATIONALE: 0.0}
    counts = {LABEL: 0, RATIONALE: 0}
    weight, bias = _head(model)
    weight, bias = weight.float(), None if bias is None else bias.float()
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad_id, device)
        h, targets, task, _ = assistant_hidden(model, batch)
        for c in range(0, len(h), chunk_size):  # (chunk, V) logits at a time
            nll = F.cross_entropy(F.linear(h[c : c + chunk_size], weight, bias), targets[c : c + chunk_size],
                                  reduction="none")
            for flag, name in enumerate(TASKS):
                sel = task[c : c + chunk_size] == flag
                sums[name] += float(nll[sel].sum())
                counts[name] += int(sel.sum())
    total = sum(counts.values())
    loss = sum(sums.values()) / total if total else None
    out = {"loss": loss, "ppl": math.exp(loss) if total else None}
    for name in TASKS:
        out[f"{name}_loss"] = sums[name] / counts[name] if counts[name] else None
    return out


def answers(model, tok, domain: Domain, rows: list[dict], max_new_tokens: int, desc: str) -> list[dict]:
    """Greedy completion of each row's "[label]" prompt: {text, answer, correct}."""
    prompts = [task_prompt(domain, tok, r) for r in rows]
    outs = models.generate(model, tok, prompts, batch_size=EVAL_BATCH, max_new_tokens=max_new_tokens, desc=desc)
    result = []
    for row, out in zip(rows, outs):
        answer = domain.parse_answer(out["text"])
        correct = answer is not None and answer == gold_label(domain, row)
        result.append({"text": out["text"], "answer": answer, "correct": correct})
    return result


def _accuracy(results: list[dict]) -> float | None:
    return sum(r["correct"] for r in results) / len(results) if results else None


def bf16_copy(model):
    """A bfloat16 copy for evaluation and saving (training keeps float32 weights)."""
    return copy.deepcopy(model).to(torch.bfloat16).eval()


def split_validation(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, validation): a seeded `fraction` of the rows, at least one, held out for early stopping."""
    order = sorted(range(len(rows)), key=lambda i: hashlib.sha256(f"{seed}:{rows[i]['id']}".encode()).hexdigest())
    n = max(1, round(fraction * len(rows))) if len(rows) > 1 else 0
    held = set(order[:n])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


# ---------------------------------------------------------------------------------------------
# The stage


def run(
    train_rows: list[dict], test_rows: list[dict], domain: Domain, teacher_path: str, params: Distill,
    device: str | None = None, checkpoint_dir: Path | None = None,
) -> dict:
    """Build, train and evaluate the student; returns the student (bf16), tokenizer and results."""
    dist = Dist.from_env()
    if dist.world > 1 and device is None:
        from accelerate import PartialState  # sets up the process group of `accelerate launch`

        device = str(PartialState().device)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tok = models.load_tokenizer(teacher_path)
    pad_id = tok.pad_token_id
    val_rows: list[dict] = []
    if params.eval_every:
        train_rows, val_rows = split_validation(train_rows, params.val_fraction, params.seed)
    train_pools, train_cut = build_examples(domain, tok, train_rows, params.max_length)
    test_pools, test_cut = build_examples(domain, tok, test_rows, params.max_length)
    val_pools = build_examples(domain, tok, val_rows, params.max_length)[0] if val_rows else None
    if not train_pools[LABEL]:
        raise ValueError("distill: no training rows")

    teacher = models.load_causal_lm(teacher_path, "float32", str(device))
    keep = select_layers(teacher.config.num_hidden_layers, params)  # None: another model
    student = init_student(teacher, params)  # float32 master weights
    teacher = teacher.to(torch.bfloat16)  # inference only

    results: dict = {"kept_layers": keep, "teacher_layers": teacher.config.num_hidden_layers}
    results["teacher"] = heldout_loss(teacher, test_pools, pad_id)
    direct = answers(teacher, tok, domain, test_rows, params.eval_max_new_tokens, "teacher [label]")
    before_model = bf16_copy(student)
    results["before"] = heldout_loss(before_model, test_pools, pad_id)
    before = answers(before_model, tok, domain, test_rows, params.eval_max_new_tokens, "student before")
    del before_model

    t0 = time.perf_counter()
    history = train(student, teacher, train_pools, params, pad_id, eval_pools=val_pools, checkpoint_dir=checkpoint_dir)
    train_seconds = time.perf_counter() - t0
    del teacher

    student = finalize_student(student)  # LoRA merged into the weights (no-op without)
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
    steps_run = len(history)
    tokens = sum(h["tokens"] for h in history)
    last = history[-1]
    topk_positions = sum(len(e.teacher_topk[0]) for p in train_pools.values() for e in p if e.teacher_topk)
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
        "seconds_per_step": round(train_seconds / steps_run, 4),
        "tokens_per_second": round(tokens / train_seconds, 1) if train_seconds else None,
        "steps": steps_run,
        "best_step": last.get("best_step"),
        "on_policy_steps": sum(h["on_policy"] for h in history),
        "teacher_forward_examples": last["teacher_examples"],
        "n_train_label": len(train_pools[LABEL]),
        "n_train_rationale": len(train_pools[RATIONALE]),
        "n_val": len(val_rows),
        "n_topk_positions": topk_positions,  # assistant tokens with a stored teacher top-k
        "n_train_truncated": train_cut,  # examples whose prompt lost the middle of its text
        "n_test_truncated": test_cut,
        "n_test": len(test_rows),
        # The final step's loss terms: unweighted, and as they enter the loss (x their weight).
        **{f"{k}_final": last[k] for k in ("kd", "ce", "hidden", "kd_weighted", "ce_weighted", "hidden_weighted")},
        "loss_first": history[0]["loss"],
        "loss_final": last["loss"],
        "teacher_layers": results["teacher_layers"],
        "student_layers": final.config.num_hidden_layers,
        "student_parameters": sum(p.numel() for p in final.parameters()),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    evals = [{"step": 0, "split": "test", **results["before"]}]
    evals += [{"step": h["step"], "split": "val", **{k: h.get(f"heldout_{k}") for k in EVAL_FIELDS[2:]}}
              for h in history if "heldout_loss" in h]
    evals.append({"step": steps_run, "split": "test", **results["after"]})
    return {"student": final, "tokenizer": tok, "kept_layers": keep, "metrics": metrics, "history": history,
            "evals": evals, "predictions": predictions}


def write_csv(path: Path, rows: list[dict], fields: tuple[str, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def main(domain: str, params: Params, root: Path) -> dict:
    """Read the condensed train set and held-out rows, distill, write the student and reports."""
    dom = get_domain(domain)
    train_rows = read_jsonl(stage_dir(root, domain, "condense") / "train.jsonl")
    test_rows = read_jsonl(stage_dir(root, domain, "synthesize") / "test.jsonl")
    spec = params.synthesize.teacher
    out = stage_dir(root, domain, "distill")
    result = run(train_rows, test_rows, dom, models.resolve_model(spec), params.distill,
                 checkpoint_dir=out / "checkpoints")
    m = result["metrics"]
    summary = {k: m[k] for k in ("teacher_accuracy", "student_before_accuracy", "student_accuracy", "student_ppl",
                                 "train_seconds")}
    if not Dist.from_env().main:
        return summary  # one writer under `accelerate launch`

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
    write_json(out / "metrics.json", m)
    write_csv(out / "history.csv", result["history"], HISTORY_FIELDS)
    write_csv(out / "eval.csv", result["evals"], EVAL_FIELDS)
    write_jsonl(out / "predictions.jsonl", result["predictions"])
    return summary


if __name__ == "__main__":  # `accelerate launch ... -m tasks.distill --domain <d>` (one process per GPU)
    import argparse

    parser = argparse.ArgumentParser(description="the distill stage alone (multi-GPU entry point)")
    parser.add_argument("--domain", default="healthcare")
    parser.add_argument("--root", default=".")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    from tasks.params import load_params

    print(json.dumps(main(args.domain, load_params(Path(args.root) / args.params), Path(args.root)), default=str))
