"""Distillation losses: pure functions on logits, named after the equation they compute.

Shapes: logits are `(B, L, V)` (or any `(..., V)`), `mask` is `(B, L)` (or the matching `(...)`)
with 1 on the positions that count (the assistant's tokens) and 0 elsewhere. p is the teacher's
distribution, q the student's, both at temperature T: p = softmax(z_t / T), q = softmax(z_s / T).

Divergences (each returns T^2 * the masked token mean; the T^2 keeps the gradient scale of the
soft term comparable when T changes, Hinton et al. 2015 §2.1):
  forward_kl       KL(p || q)                                   mass-covering (Hinton et al., 2015)
  reverse_kl       KL(q || p)                                   mode-seeking (MiniLLM, Gu et al., 2024)
  generalized_jsd  b KL(p || m) + (1-b) KL(q || m), m = b p + (1-b) q   (GKD, Agarwal et al., 2024,
                   arXiv:2306.13649 Eq. 1; TRL GKDTrainer.generalized_jsd_loss: b = 0 is forward KL,
                   b = 1 reverse KL, as those endpoints of the formula are 0 themselves)
  skew_kl          KL(p || a p + (1-a) q)                       (DistiLLM, Ko et al., 2024, arXiv:2402.03898:
  skew_reverse_kl  KL(q || a q + (1-a) p)                        bounded by log 1/a; a = 0 is plain KL / reverse KL)
  tvd              1/2 sum_v |p_v - q_v|                        total variation (Wen et al., 2023, f-distill)

`token_divergence` computes them per token from log-probs, so the same code serves the dense
vocabulary and the (k+1)-way top-k-plus-tail distributions of offline KD (`topk_log_probs`).

Call these in float32 OUTSIDE autocast: under bf16 autocast `log_softmax` over a 49k vocabulary
loses the small probabilities that KD is about. Written as explicit `p * (log p - log q)` sums
rather than `F.kl_div`: the same numbers (tests/test_losses.py checks), measured 1.5x faster
forward + backward on 2 CPU cores (0.35 s vs 0.52-0.58 s for 600 tokens x 49,152 vocabulary).

`chunked_head_loss` is the memory-saving path the trainer uses: head projection + loss over
chunks of positions, never holding `(N, V)` logits for all N positions (see its docstring).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from tasks.params import Divergence  # the Literal of divergence names that params.yaml accepts

DIVERGENCES: tuple[str, ...] = Divergence.__args__


def _masked_mean(per_token: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of `per_token` `(...)` over the positions where `mask` is 1; 0 when none are."""
    if mask is None:
        return per_token.mean()
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp_min(1.0)


# ---------------------------------------------------------------------------------------------
# Per token, on log-probabilities `(..., K)` -> `(...)`


def kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_v p_v (log p_v - log q_v) per position."""
    return (logp.exp() * (logp - logq)).sum(-1)


def _mix(logp: torch.Tensor, logq: torch.Tensor, a: float) -> torch.Tensor:
    """log(a p + (1 - a) q), stable for a in [0, 1] (log 0 = -inf drops that side)."""
    la = math.log(a) if a > 0 else -math.inf
    lb = math.log(1 - a) if a < 1 else -math.inf
    return torch.logaddexp(logp + la, logq + lb)


def token_divergence(
    kind: Divergence, s_logp: torch.Tensor, t_logp: torch.Tensor, beta: float = 0.5, alpha: float = 0.1
) -> torch.Tensor:
    """Divergence `kind` between teacher log-probs `t_logp` and student log-probs `s_logp`, per position."""
    if kind == "forward_kl":
        return kl(t_logp, s_logp)
    if kind == "reverse_kl":
        return kl(s_logp, t_logp)
    if kind == "jsd":
        if beta == 0:
            return kl(t_logp, s_logp)
        if beta == 1:
            return kl(s_logp, t_logp)
        m = _mix(t_logp, s_logp, beta)  # log(b p + (1-b) q)
        return beta * kl(t_logp, m) + (1 - beta) * kl(s_logp, m)
    if kind == "skew_kl":
        return kl(t_logp, _mix(t_logp, s_logp, alpha))
    if kind == "skew_reverse_kl":
        return kl(s_logp, _mix(s_logp, t_logp, alpha))
    if kind == "tvd":
        return 0.5 * (t_logp.exp() - s_logp.exp()).abs().sum(-1)
    raise ValueError(f"unknown divergence {kind!r}; one of {DIVERGENCES}")


# ---------------------------------------------------------------------------------------------
# On logits, masked means (the dense reference the chunked path is tested against)


def divergence(
    kind: Divergence,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    beta: float = 0.5,
    alpha: float = 0.1,
) -> torch.Tensor:
    """T^2 * masked mean of `token_divergence(kind)` between softmax(z / T) of both; a float32 scalar."""
    s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    t = torch.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    return temperature**2 * _masked_mean(token_divergence(kind, s, t, beta, alpha), mask)


def forward_kl(student_logits, teacher_logits, temperature: float = 1.0, mask=None) -> torch.Tensor:
    """T^2 KL(p_T || q_T) (Hinton et al., 2015; Eq. 1 of Agarwal et al., 2306.13649 at b = 0).

    T^2 KL(p || q) = T^2 (H(p, q) - H(p)) = soft_cross_entropy - T^2 H(p_T): the same gradient in
    the student as `soft_cross_entropy`, but 0 when the student equals the teacher.
    """
    return divergence("forward_kl", student_logits, teacher_logits, temperature, mask)


def reverse_kl(student_logits, teacher_logits, temperature: float = 1.0, mask=None) -> torch.Tensor:
    """T^2 KL(q_T || p_T), mode-seeking (MiniLLM, Gu et al., 2024)."""
    return divergence("reverse_kl", student_logits, teacher_logits, temperature, mask)


def generalized_jsd(student_logits, teacher_logits, beta: float = 0.5, temperature: float = 1.0, mask=None):
    """T^2 JSD(b): b KL(p || m) + (1-b) KL(q || m), m = b p + (1-b) q (GKD Eq. 1; TRL's endpoints)."""
    return divergence("jsd", student_logits, teacher_logits, temperature, mask, beta=beta)


def skew_kl(student_logits, teacher_logits, alpha: float = 0.1, temperature: float = 1.0, mask=None):
    """T^2 skew KL: KL(p || a p + (1-a) q) (DistiLLM; at most log 1/a, a = 0 is forward KL)."""
    return divergence("skew_kl", student_logits, teacher_logits, temperature, mask, alpha=alpha)


def skew_reverse_kl(student_logits, teacher_logits, alpha: float = 0.1, temperature: float = 1.0, mask=None):
    """T^2 skew reverse KL: KL(q || a q + (1-a) p) (DistiLLM; a = 0 is reverse KL)."""
    return divergence("skew_reverse_kl", student_logits, teacher_logits, temperature, mask, alpha=alpha)


def tvd(student_logits, teacher_logits, temperature: float = 1.0, mask=None) -> torch.Tensor:
    """T^2 total variation distance 1/2 sum_v |p_v - q_v|."""
    return divergence("tvd", student_logits, teacher_logits, temperature, mask)


def soft_cross_entropy(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft-target cross-entropy of knowledge distillation (Hinton et al., 2015, Eq. 2 and §2).

        L_KD = T^2 * mean_{t in mask} H(p_T, q_T),   H(p, q) = - sum_v p_v log q_v.

    The teacher is a constant (detached). Returns a scalar float32 tensor.
    """
    s = student_logits.float() / temperature  # (..., V)
    t = teacher_logits.detach().float() / temperature
    per_token = -(torch.softmax(t, dim=-1) * torch.log_softmax(s, dim=-1)).sum(-1)  # (...)
    return temperature**2 * _masked_mean(per_token, mask)


def entropy(logits: torch.Tensor, temperature: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean entropy H(p_T) = - sum_v p_v log p_v of softmax(logits / T) over the masked positions."""
    z = logits.detach().float() / temperature
    logp = torch.log_softmax(z, dim=-1)
    per_token = -(logp.exp() * logp).sum(-1)
    return _masked_mean(per_token, mask)


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy -log q(y_t) of the gold tokens `targets` `(...)` over the masked positions."""
    per_token = F.cross_entropy(logits.float().flatten(0, -2), targets.flatten(), reduction="none")
    return _masked_mean(per_token.view(targets.shape), mask)


# ---------------------------------------------------------------------------------------------
# Offline KD from stored top-k teacher log-probs


TAIL_FLOOR = 1e-6  # the tail bucket's smallest mass: stored log-probs are rounded, their sum can reach 1


def topk_log_probs(
    student_logits: torch.Tensor, ids: torch.Tensor, t_logp: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher log-probs `(N, k + 1)` over the teacher's top-k tokens plus a tail bucket.

    `ids` `(N, k)` and `t_logp` `(N, k)` are the teacher's k most likely tokens and their stored
    log-probs (untempered: the tail's shape is unknown, so no temperature can be applied to it).
    Rather than renormalising the k probabilities to 1 (which overstates every one of them and
    tells the student nothing about the rest of the vocabulary), the remaining mass
    1 - sum_k p is kept as one "tail" category, and the student's own mass outside the k ids is
    its tail (the "top-k + residual" estimate of sparse KD; cf. Anshumann et al., 2025, "Sparse
    Logit Sampling", arXiv:2503.16870, on the bias of plain top-k renormalisation). Any
    divergence of `token_divergence` then runs over these k + 1 categories; with k = V it is the
    dense divergence exactly (tail mass 0, floored at TAIL_FLOOR).
    """
    s_all = torch.log_softmax(student_logits.float(), dim=-1)  # (N, V)
    s_top = s_all.gather(-1, ids)  # (N, k)
    s_tail = torch.log1p(-s_top.exp().sum(-1).clamp(max=1 - TAIL_FLOOR))  # log(1 - sum_k q)
    t = t_logp.float()
    t_tail = torch.log1p(-t.exp().sum(-1).clamp(max=1 - TAIL_FLOOR))
    t = torch.cat([t, t_tail[:, None]], -1)
    t = t - torch.logsumexp(t, -1, keepdim=True)  # exactly normalised after rounding and the floor
    return torch.cat([s_top, s_tail[:, None]], -1), t


# ---------------------------------------------------------------------------------------------
# The chunked head: projection + loss per chunk of positions


class _ChunkedHead(torch.autograd.Function):
    """Sum over chunks of `objective(logits_chunk, chunk)` with logits = hidden @ weight^T + bias.

    Forward runs each chunk's head and loss under its own small autograd graph and takes the
    chunk's gradients right away (`torch.autograd.grad`), so only one chunk's `(n, V)` logits and
    softmax intermediates live at a time; backward only scales the stored gradients. The same
    idea as Liger-Kernel's fused linear cross-entropy / JSD (Hsu et al., 2024, arXiv:2410.10989),
    in plain PyTorch: no recomputation, so it costs no more FLOPs than the unchunked loss.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, objective, chunk_size):
        n = hidden.shape[0]
        want = ctx.needs_input_grad[:3]
        grads = [torch.zeros_like(x) if x is not None and w else None for x, w in zip((hidden, weight, bias), want)]
        total = hidden.new_zeros(())
        step = chunk_size if chunk_size > 0 else max(n, 1)
        for start in range(0, n, step):
            chunk = slice(start, min(n, start + step))
            with torch.enable_grad():
                h = hidden[chunk].detach().requires_grad_(want[0])
                w = weight.detach().requires_grad_(want[1])
                b = None if bias is None else bias.detach().requires_grad_(want[2])
                value = objective(F.linear(h, w, b), chunk)
                inputs = [x for x, need in zip((h, w, b), want) if need]
                if inputs and value.requires_grad:
                    got = iter(torch.autograd.grad(value, inputs))
                    for i, need in enumerate(want):
                        if need:
                            g = next(got)
                            if i == 0:
                                grads[0][chunk] = g
                            else:
                                grads[i] += g
            total += value.detach()
        ctx.save_for_backward(*[g if g is not None else torch.empty(0) for g in grads])
        ctx.have = [g is not None for g in grads]
        return total

    @staticmethod
    def backward(ctx, grad_out):
        stored = ctx.saved_tensors
        out = [s * grad_out if have else None for s, have in zip(stored, ctx.have)]
        return out[0], out[1], out[2], None, None


def chunked_head_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    objective: Callable[[torch.Tensor, slice], torch.Tensor],
    chunk_size: int,
) -> torch.Tensor:
    """sum_chunks objective(hidden[c] @ weight^T + bias, c), differentiable in hidden, weight, bias.

    hidden `(N, H)` float32 at the N scored positions; weight `(V, H)`; `objective(logits (n, V),
    chunk slice) -> scalar` must already be normalised globally (divide by the batch's token
    counts, not the chunk's), so the chunks add up to the full loss. chunk_size 0: one chunk.
    Peak memory ~ chunk_size x V floats instead of N x V (plus the (V, H) weight gradient).
    """
    return _ChunkedHead.apply(hidden, weight, bias, objective, chunk_size)
