"""Gradient-matching selection: CRAIG (Mirzasoleiman, Bilmes & Leskovec, 2020, "Coresets for
Data-efficient Training of Machine Learning Models", ICML) on last-layer gradient sketches.

Features. For a causal LM the per-example gradient of the answer loss w.r.t. the LM head W
`(V, H)` has the closed form G_i = sum_t (softmax(W h_t) - onehot(y_t)) h_t^T over the answer
tokens t, with h_t the head's input. CRAIG (Sec. 3.4) and GradMatch (Killamsetty et al., 2021)
use this last-layer gradient as the cheap proxy for the full one. V x H (49k x 576) is too big
to compare, so each factor is projected with a fixed Gaussian matrix, R_V `(V, a)` and R_H
`(H, b)`: g_i = sum_t (R_V^T e_t) (x) (R_H^T h_t), an a*b-dim sketch whose inner products are
unbiased estimates of <G_i, G_j> (a Kronecker-product Johnson-Lindenstrauss projection, as in
LoGra, Choe et al., 2024). R_V^T e_t = R_V^T p_t - R_V[y_t] costs one (V, a) matmul per token.

Selection. CRAIG picks the medoids S maximising the facility-location function
F(S) = sum_i max_{j in S} (d0 - ||g_i - g_j||), d0 an upper bound on the distances: every row's
gradient is then close to a picked one, which bounds the error of the weighted coreset gradient
(Eq. 9). Greedy maximisation is (1 - 1/e)-optimal; we use stochastic greedy (Mirzasoleiman et
al., 2015, "Lazier than lazy greedy"): each step evaluates a random sample of
(n / k) ln(1 / eps) candidates, O(n k d) work in all instead of O(n^2 d). With `strata`
(the labels) it is CRAIG's per-class selection: the budget split by class size, facility location
inside each class, picks interleaved in proportion. The result is an order (greedy picks first,
then the seeded order) that condense's quota-aware selection follows.

Speed (bench/condense_speed.py, 10,000 rows on one core): the forward passes dominate. They run in
length batches with right padding and no mask, the shared chat-template prefix once (KV cache),
bf16 autocast where the CPU/GPU has native bf16 (scoring.hidden_batches); the head is batched.
CRAIG's per-medoid weights (cluster sizes) are reported; the distill trainer samples uniformly,
so the condensed set is used unweighted.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tasks.condensation.facility import EPS, facility_order
from tasks.condensation.scoring import (
    BATCH,
    MAX_TOKENS,
    _fit,
    forward_dtype,
    hidden_batches,
)
from tasks.distillation.examples import LABEL, make_example

SKETCH = (16, 16)  # (a, b): a 256-dim gradient sketch
HEAD_CHUNK = 256  # target positions per (chunk, V) logits block


def label_pairs(domain, tok, rows: list[dict], max_length: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids) of the student's label task for each row (what distill trains)."""
    out = []
    for row in rows:
        ex, _ = make_example(domain, tok, row, LABEL, max_length)
        out.append(_fit(ex.prompt_ids, ex.target_ids, max_length))
    return out


def gradient_sketches(model, pairs: list[tuple[list[int], list[int]]], pad_id: int, seed: int = 0,
                      sketch: tuple[int, int] = SKETCH, batch_size: int = BATCH, *, dtype: str = "auto",
                      max_tokens: int = MAX_TOKENS) -> np.ndarray:
    """`(n, a*b)` float32 sketches of each pair's last-layer gradient (see the module docstring).

    The forward runs in length batches with the shared prompt prefix cached
    (scoring.hidden_batches), in bfloat16 where the hardware has it natively (`dtype`: auto |
    bfloat16 | float32); the head, softmax and projections stay float32
    (bf16 logits measured no faster), over all target positions of a batch at once.
    Deterministic for the seed on a given machine.
    """
    head = model.get_output_embeddings()
    w = head.weight.float()  # (V, H)
    bias = head.bias.float() if getattr(head, "bias", None) is not None else None
    gen = torch.Generator().manual_seed(seed)
    a, b = sketch
    r_v = (torch.randn(w.shape[0], a, generator=gen) / math.sqrt(a)).to(w.device)  # (V, a)
    r_h = (torch.randn(w.shape[1], b, generator=gen) / math.sqrt(b)).to(w.device)  # (H, b)
    out = np.zeros((len(pairs), a * b), dtype=np.float32)
    amp = forward_dtype(w.device, dtype)
    with torch.inference_mode():
        for rows, h, y, owner in hidden_batches(model, pairs, pad_id, batch_size, max_tokens, "gradient sketches", amp):
            g = torch.zeros(len(rows), a * b, device=w.device)
            for c in range(0, len(y), HEAD_CHUNK):  # (chunk, V) logits at a time: bounded memory
                hc, yc, oc = h[c : c + HEAD_CHUNK], y[c : c + HEAD_CHUNK], owner[c : c + HEAD_CHUNK]
                logits = hc @ w.T if bias is None else hc @ w.T + bias
                e = torch.softmax(logits, dim=-1) @ r_v - r_v[yc]  # (N, a) = R_V^T (p_t - onehot(y_t))
                outer = (e[:, :, None] * (hc @ r_h)[:, None, :]).reshape(len(yc), a * b)  # e_t (x) R_H^T h_t
                g.index_add_(0, oc, outer)  # sum over each row's target tokens
            out[rows] = g.cpu().numpy()
    return out


def craig_order(g: np.ndarray, k: int, seed: int = 0, eps: float = EPS,
                strata: list | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(order of all n rows: k stochastic-greedy facility-location picks first; weights `(k,)`).

    CRAIG's objective on the sketches (similarity d0 - ||g_i - g_j||); `strata` (one key per row,
    e.g. the label): CRAIG's per-class selection (tasks/condensation/facility.py).
    """
    return facility_order(g, k, seed, eps, strata, kind="distance")
