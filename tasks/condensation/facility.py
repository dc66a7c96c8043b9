"""Facility-location selection: the k rows that best stand in for all of them.

F(S) = sum_i max_{j in S} sim(x_i, x_j) rewards a set whose members are close to every row,
weighted by how many rows they stand for: dense regions get more picks than k-center gives
them (k-center covers the outliers first), and every region gets some, which near-centroid
ranking (prototype) does not promise. F is monotone submodular, so greedy maximisation is
(1 - 1/e)-optimal (Nemhauser et al., 1978); we use stochastic greedy (Mirzasoleiman et al.,
2015, "Lazier than lazy greedy"): each step evaluates a random sample of (n / k) ln(1 / eps)
candidates, O(n k d) work in all instead of O(n^2 d).

Two users:
  gradmatch  CRAIG (Mirzasoleiman, Bilmes & Leskovec, 2020) on gradient sketches, similarity
             d0 - ||g_i - g_j|| (d0 bounds the distances), per class (tasks/condensation/gradmatch.py).
  facility   the same objective on the L2-normalised text embeddings with cosine similarity
             clipped at 0, the representativeness half of submodular data selection for
             instruction tuning (e.g. Bhatt et al., 2024; Renduchintala et al., 2024, SMART),
             per label. `candidates` restricts the picks (not the rows to represent): with
             `rationale_rows: first` only rows with a kept rationale are picked, chosen to stand in
             for every row of their label, including those the teacher missed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

EPS = 0.01  # stochastic greedy: each step finds a (1 - 1/e - eps)-good pick in expectation


def greedy(similarity: Callable[[np.ndarray], np.ndarray], n: int, k: int, rng: np.random.Generator,
           eps: float = EPS, candidates: np.ndarray | None = None) -> tuple[list[int], np.ndarray]:
    """k stochastic-greedy facility-location picks among rows 0..n-1; (picks, index of each row's most similar pick).

    `similarity(cand)` returns `(n, len(cand))` similarities >= 0 of every row to the candidates.
    `candidates` `(n,)` bool: rows that may be picked (all: None); every row counts in F.
    """
    allowed = np.ones(n, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool).copy()
    n_allowed = int(allowed.sum())
    k = min(k, n_allowed)
    best = np.zeros(n, dtype=np.float32)  # max similarity of each row to the picks (0: none yet)
    nearest = np.full(n, -1, dtype=np.int64)
    picks: list[int] = []
    if k == 0:
        return picks, nearest
    size = min(n_allowed, max(1, math.ceil(n_allowed / k * math.log(1 / eps))))
    for _ in range(k):
        free = np.flatnonzero(allowed)
        cand = free if len(free) <= size else rng.choice(free, size, replace=False)
        s = similarity(cand)  # (n, c)
        j = int(np.argmax(np.maximum(s - best[:, None], 0.0).sum(0)))
        better = s[:, j] > best
        best[better], nearest[better] = s[better, j], len(picks)
        allowed[cand[j]] = False
        picks.append(int(cand[j]))
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


def _similarity(xs, kind: str, d0: float) -> Callable[[np.ndarray], np.ndarray]:
    """sim(cand) `(len(xs), len(cand))` among the rows of xs (dense, or scipy sparse for cosine);
    d0 bounds the distances (kind distance)."""
    if kind == "cosine":
        def cosine(cand):
            s = xs @ xs[cand].T
            return np.maximum(s.toarray() if hasattr(s, "toarray") else s, 0.0)
        return cosine
    sq = (xs * xs).sum(1)

    def distance(cand):
        return d0 - np.sqrt(np.maximum(sq[:, None] + sq[cand][None, :] - 2.0 * xs @ xs[cand].T, 0.0))
    return distance


def facility_order(x: np.ndarray, k: int, seed: int = 0, eps: float = EPS, strata: list | np.ndarray | None = None,
                   kind: str = "distance", candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(order of all n rows: k stochastic-greedy facility-location picks first; weights `(picks,)`).

    `kind` distance: sim = d0 - ||x_i - x_j|| with d0 = 2 max ||x|| (CRAIG); cosine: max(0, x_i . x_j)
    for L2-normalised rows, `x` dense or scipy sparse (TF-IDF). weights[j] = rows whose most similar pick is order[j] (CRAIG's gamma_j).
    `strata` (one key per row, e.g. the label): the budget split by stratum size, facility location
    inside each stratum, each stratum's picks interleaved in proportion (the j-th of k_s picks at
    j / k_s), so a fill that stops early still takes every stratum's best picks. None: one stratum.
    `candidates` `(n,)` bool: only these may be picked (a stratum with fewer gets fewer picks).
    The rest follows in the seeded order.
    """
    n = x.shape[0]
    k = max(0, min(k, n))
    rng = np.random.default_rng(seed)
    if n == 0 or k == 0:
        return rng.permutation(n), np.zeros(0, dtype=np.int64)
    x = x.astype(np.float32)
    # ||x_i - x_j|| <= 2 max ||x||: distance similarities stay >= 0
    d0 = 2.0 * float(np.sqrt((x * x).sum(1).max())) + 1e-6 if kind == "distance" else 0.0
    allowed = np.ones(n, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool)
    keys = np.zeros(n, dtype=np.int64) if strata is None else np.unique(np.asarray(strata, dtype=str),
                                                                         return_inverse=True)[1].ravel()
    groups = [np.flatnonzero(keys == s) for s in range(int(keys.max()) + 1)]
    ranked: list[tuple[float, int, int, int]] = []  # (position j / k_s, stratum, global row, its weight)
    for s, (rows, k_s) in enumerate(zip(groups, budgets([len(r) for r in groups], k))):
        picks, nearest = greedy(_similarity(x[rows], kind, d0), len(rows), k_s, rng, eps, allowed[rows])
        weight = np.bincount(nearest[nearest >= 0], minlength=len(picks))
        ranked += [(j / len(picks), s, int(rows[c]), int(weight[j])) for j, c in enumerate(picks)]
    ranked.sort()
    picked = np.array([r[2] for r in ranked], dtype=np.int64)
    chosen = np.zeros(n, dtype=bool)
    chosen[picked] = True
    rest = rng.permutation(np.flatnonzero(~chosen))
    return np.concatenate([picked, rest]), np.array([r[3] for r in ranked], dtype=np.int64)
