"""The training objective: distilling step-by-step's task-weighted sum (Hsieh et al., 2023, Eq. 3)
of KD (Hinton et al., 2015; forward/reverse/skew KL as in DistiLLM, generalized JSD as in GKD)
and CE, chunked through the head; FitNets hidden-state alignment (Romero et al., 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tasks.distillation.distributed import Dist
from tasks.distillation.examples import LABEL, RATIONALE, TASKS
from tasks.distillation.teacher import TeacherTargets
from tasks.losses import (
    chunked_head_loss,
    divergence,
    token_cross_entropy,
    token_divergence,
)
from tasks.params import Distill


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


def head_loss(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, task: torch.Tensor,
    teacher: TeacherTargets | None, params: Distill, weights: dict[str, float], kind: str, ce: bool = True,
    dist: Dist = Dist(),
) -> dict[str, torch.Tensor]:
    """The multi-task KD + CE loss through the student's head, chunk by chunk; and every term.

    Returns "loss" (differentiable in hidden, weight, bias) and, detached, the per-task means
    `<task>_kd`, `<task>_ce` and their task-weighted sums "kd", "ce". KD is T^2-scaled for the
    dense teacher, unscaled (T = 1) for stored top-k; CE is left out when `ce` is False.
    Under data parallelism (`dist`), the means divide by the whole batch's position counts, so
    each term is this process's share and the processes' sums are the whole batch's values.
    """
    use_kd = teacher is not None and params.kd_weight > 0
    dense = use_kd and teacher.ids is None
    temperature = params.temperature if dense else 1.0
    has_kd = torch.full_like(targets, use_kd, dtype=torch.bool)  # positions with a teacher distribution
    if use_kd and teacher.has is not None:
        has_kd = teacher.has
    kd_w = torch.zeros_like(hidden[:, 0])  # (N,) per-position weights, normalised per task
    ce_w = torch.zeros_like(kd_w)
    local = {}
    for flag, name in enumerate(TASKS):
        sel = task == flag
        local[f"{name}_n"], local[f"{name}_kd_n"] = int(sel.sum()), int((sel & has_kd).sum())
    local = dist.sum_floats(local)  # the whole batch's counts
    count = {name: (int(local[f"{name}_n"]), int(local[f"{name}_kd_n"])) for name in TASKS}
    for flag, name in enumerate(TASKS):
        sel = task == flag
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
