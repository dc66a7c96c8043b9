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
(n / k) ln(1 / eps) candidates, O(n k d) work in all instead of O(n^2 d). The result is an
order (greedy picks first, then the seeded order) that condense's quota-aware selection follows.
CRAIG's per-medoid weights (cluster sizes) are reported; the distill trainer samples uniformly,
so the condensed set is used unweighted.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tasks.condensation.scoring import _fit, target_hidden
from tasks.distillation.examples import LABEL, make_example

SKETCH = (16, 16)  # (a, b): a 256-dim gradient sketch
EPS = 0.01  # stochastic greedy: each step finds a (1 - 1/e - eps)-good pick in expectation


def label_pairs(domain, tok, rows: list[dict], max_length: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids) of the student's label task for each row (what distill trains)."""
    out = []
    for row in rows:
        ex, _ = make_example(domain, tok, row, LABEL, max_length)
        out.append(_fit(ex.prompt_ids, ex.target_ids, max_length))
    return out


@torch.no_grad()
def gradient_sketches(model, pairs: list[tuple[list[int], list[int]]], pad_id: int, seed: int = 0,
                      sketch: tuple[int, int] = SKETCH, batch_size: int = 16) -> np.ndarray:
    """`(n, a*b)` float32 sketches of each pair's last-layer gradient (see the module docstring)."""
    head = model.get_output_embeddings()
    w = head.weight.float()  # (V, H)
    gen = torch.Generator().manual_seed(seed)
    a, b = sketch
    r_v = (torch.randn(w.shape[0], a, generator=gen) / math.sqrt(a)).to(w.device)  # (V, a)
    r_h = (torch.randn(w.shape[1], b, generator=gen) / math.sqrt(b)).to(w.device)  # (H, b)
    out = np.zeros((len(pairs), a * b), dtype=np.float32)
    for i, (h, y) in enumerate(target_hidden(model, pairs, pad_id, batch_size, "gradient sketches")):
        p = torch.softmax(h @ w.T, dim=-1)  # (T, V)
        e = p @ r_v - r_v[y]  # (T, a) = R_V^T (p_t - onehot(y_t))
        out[i] = (e.T @ (h @ r_h)).reshape(-1).cpu().numpy()  # sum_t e_t (x) R_H^T h_t
    return out


def craig_order(g: np.ndarray, k: int, seed: int = 0, eps: float = EPS) -> tuple[np.ndarray, np.ndarray]:
    """(order of all n rows: k stochastic-greedy facility-location picks first; weights `(k,)`).

    weights[j] = rows whose most similar pick is order[j] (CRAIG's gamma_j).
    """
    n = len(g)
    k = max(0, min(k, n))
    rng = np.random.default_rng(seed)
    if n == 0 or k == 0:
        return rng.permutation(n), np.zeros(0, dtype=np.int64)
    g = g.astype(np.float32)
    sq = (g * g).sum(1)
    d0 = 2.0 * float(np.sqrt(sq.max())) + 1e-6  # ||g_i - g_j|| <= 2 max ||g||: similarities stay >= 0
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
    weights = np.bincount(nearest[nearest >= 0], minlength=len(picks))
    rest = rng.permutation(np.flatnonzero(~chosen))
    return np.concatenate([np.array(picks, dtype=np.int64), rest]), weights
