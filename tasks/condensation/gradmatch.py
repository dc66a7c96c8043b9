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
EPS = 0.01  # stochastic greedy: each step finds a (1 - 1/e - eps)-good pick in expectation


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


def _facility_location(g: np.ndarray, sq: np.ndarray, k: int, d0: float, rng: np.random.Generator,
                       eps: float) -> tuple[list[int], np.ndarray]:
    """k stochastic-greedy facility-location picks among the rows of g; (picks, nearest pick per row)."""
    n = len(g)
    best = np.zeros(n, dtype=np.float32)  # max similarity of each row to the picks (0: none yet)
    nearest = np.full(n, -1, dtype=np.int64)
    chosen = np.zeros(n, dtype=bool)
    picks: list[int] = []
    size = min(n, max(1, math.ceil(n / k * math.log(1 / eps))))
    for _ in range(k):
        free = np.flatnonzero(~chosen)
        cand = free if len(free) <= size else rng.choice(free, size, replace=False)
        d = np.sqrt(np.maximum(sq[:, None] + sq[cand][None, :] - 2.0 * g @ g[cand].T, 0.0))  # (n, c)
        gain = np.maximum(d0 - d - best[:, None], 0.0).sum(0)
        j = int(np.argmax(gain))
        c = int(cand[j])
        sim = d0 - d[:, j]
        better = sim > best
        best[better], nearest[better] = sim[better], len(picks)
        chosen[c] = True
        picks.append(c)
    return picks, nearest


def budgets(sizes: list[int], k: int) -> list[int]:
    """k split over strata in proportion to their sizes (largest remainder, ties to the earlier)."""
    total = sum(sizes)
    if total == 0:
        return [0] * len(sizes)
    exact = [k * s / total for s in sizes]
    out = [min(s, math.floor(e)) for s, e in zip(sizes, exact)]
    for i in sorted(range(len(sizes)), key=lambda i: (-(exact[i] - math.floor(exact[i])), i)):
        if sum(out) >= k:
            break
        if out[i] < sizes[i]:
            out[i] += 1
    return out


def craig_order(g: np.ndarray, k: int, seed: int = 0, eps: float = EPS,
                strata: list | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(order of all n rows: k stochastic-greedy facility-location picks first; weights `(k,)`).

    weights[j] = rows whose most similar pick is order[j] (CRAIG's gamma_j). `strata` (one key
    per row, e.g. the label): CRAIG's per-class selection, the budget split by size and each
    stratum's picks interleaved in proportion (the j-th of k_s picks at j / k_s), so a fill that
    stops early still takes every stratum's best picks. None: one stratum.
    """
    n = len(g)
    k = max(0, min(k, n))
    rng = np.random.default_rng(seed)
    if n == 0 or k == 0:
        return rng.permutation(n), np.zeros(0, dtype=np.int64)
    g = g.astype(np.float32)
    sq = (g * g).sum(1)
    d0 = 2.0 * float(np.sqrt(sq.max())) + 1e-6  # ||g_i - g_j|| <= 2 max ||g||: similarities stay >= 0
    keys = np.zeros(n, dtype=np.int64) if strata is None else np.unique(np.asarray(strata, dtype=str),
                                                                         return_inverse=True)[1].ravel()
    groups = [np.flatnonzero(keys == s) for s in range(int(keys.max()) + 1)]
    ranked: list[tuple[float, int, int, int]] = []  # (position j / k_s, stratum, global row, its weight)
    for s, (rows, k_s) in enumerate(zip(groups, budgets([len(r) for r in groups], k))):
        if k_s == 0:
            continue
        picks, nearest = _facility_location(g[rows], sq[rows], k_s, d0, rng, eps)
        weight = np.bincount(nearest[nearest >= 0], minlength=k_s)
        ranked += [(j / k_s, s, int(rows[c]), int(weight[j])) for j, c in enumerate(picks)]
    ranked.sort()
    picked = np.array([r[2] for r in ranked], dtype=np.int64)
    chosen = np.zeros(n, dtype=bool)
    chosen[picked] = True
    rest = rng.permutation(np.flatnonzero(~chosen))
    return np.concatenate([picked, rest]), np.array([r[3] for r in ranked], dtype=np.int64)
