"""Coverage-centric coreset selection (CCS; Zheng, Liu, Li & Prakash, ICLR 2023, "Coverage-centric
Coreset Selection for High Pruning Rates", arXiv:2210.15809).

Score-ranked selection (keep the hardest, or the easiest) loses to a random draw when most of the
data is pruned: the kept set covers only one end of the difficulty range. CCS keeps the whole
range instead (their Alg. 1):

  1. drop the hardest `prune_hard` share (mislabelled and ambiguous rows live there);
  2. cut the score range into `strata` equal-width bins;
  3. until the budget m is spent: take the bin with the fewest rows, draw min(|bin|, m / bins
     left) of its rows uniformly, subtract, remove the bin.

Small bins are kept whole and the rest share the budget evenly, so the easy, middle and hard
regions all keep members, where a random draw would mirror the (often skewed) score histogram.
"""

from __future__ import annotations

import numpy as np


def ccs_order(score: np.ndarray, k: int, strata: int = 50, prune_hard: float = 0.0, seed: int = 0) -> np.ndarray:
    """A permutation of range(n): the CCS sample of k rows first (shuffled), then the others
    (shuffled, the pruned hardest last). `score`: difficulty, higher is harder."""
    rng = np.random.default_rng(seed)
    n = len(score)
    k = max(0, min(k, n))
    hard_first = np.argsort(-score, kind="stable")
    pruned = hard_first[: int(round(prune_hard * n))]
    alive = np.setdiff1d(np.arange(n), pruned)
    s = score[alive]
    edges = np.linspace(s.min(), s.max(), strata + 1) if len(s) else np.zeros(2)
    bins = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, strata - 1)
    members = [alive[bins == b] for b in range(strata)]
    members = [m for m in members if len(m)]
    budget = min(k, len(alive))
    picked: list[np.ndarray] = []
    for left, m in zip(range(len(members), 0, -1), sorted(members, key=len)):  # smallest bin first
        take = min(len(m), budget // left)
        picked.append(rng.choice(m, size=take, replace=False))
        budget -= take
    chosen = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
    rest = np.setdiff1d(alive, chosen)
    return np.concatenate([rng.permutation(chosen), rng.permutation(rest), rng.permutation(pruned)]).astype(np.int64)
