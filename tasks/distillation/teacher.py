"""What the KD term compares the student with (Hinton et al., 2015): the frozen teacher's dense
logits, memoised per example (online), or its top-k log-probs plus a tail bucket (offline,
sparse top-k KD)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from tasks.distillation.examples import Example, collate
from tasks.distillation.forward import (
    EVAL_BATCH,
    assistant_hidden,
    output_head,
    target_logits,
)
from tasks.losses import topk_log_probs

TEACHER_CACHE_MB = 2048  # memoised teacher hidden states (~1 kB per token at width 576, bf16)


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
        weight, bias = output_head(teacher)
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
        """The memo for a checkpoint: hidden states only (on the CPU), keyed by (task, position in pool)."""
        return {index[k]: {n: t.cpu() for n, t in v.items() if n != "logits"} for k, v in self.cache.items() if k in index}

    def load(self, state: dict, pools: dict[str, list[Example]]) -> None:
        for (task, i), entry in state.items():
            entry = {k: v.to(self.weight.device) for k, v in entry.items()}
            self.cache[id(pools[task][i])] = entry
            self._add_logits(entry)


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
