"""Exact and near-duplicate removal before selection.

exact  the same text after lower-casing and collapsing whitespace and punctuation.
near   MinHash (Broder, 1997, "On the resemblance and containment of documents") of word 3-gram
       shingles with `NUM_PERM` permutations, candidates from banded LSH (datasketch
       MinHashLSH) at `threshold` estimated Jaccard, confirmed by the exact Jaccard of the
       shingle sets. Lee et al. (2022, "Deduplicating Training Data Makes Language Models
       Better") remove near duplicates the same way. Texts shorter than 3 words shingle by word.

Of a group of duplicates the first row in input order that has a kept rationale survives (else
the first): the duplicate adds nothing a student has not already seen, but the rationale does.
"""

from __future__ import annotations

import re

import numpy as np

NUM_PERM = 128
SHINGLE = 3  # words per shingle: short enough that a changed digit leaves most shingles intact
_NON_WORD = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    return _NON_WORD.sub(" ", text.lower()).strip()


def shingles(text: str, n: int = SHINGLE) -> set[str]:
    words = normalise(text).split()
    if len(words) < n:
        return set(words) or {""}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def _preferred(rows: list[dict], i: int, j: int) -> bool:
    """Whether row i should survive over row j (a kept rationale first, then input order)."""
    ri, rj = bool(rows[i].get("rationale")), bool(rows[j].get("rationale"))
    return (ri, -i) > (rj, -j)


def find_duplicates(rows: list[dict], mode: str = "near", threshold: float = 0.8, seed: int = 0) -> dict[int, tuple[str, int]]:
    """Dropped rows: {index: (reason, index of the surviving row)}, reason exact_duplicate | near_duplicate."""
    if mode == "none" or not rows:
        return {}
    texts = [str(r.get("text", "")) for r in rows]
    dropped: dict[int, tuple[str, int]] = {}
    keeper: dict[str, int] = {}
    for i, t in enumerate(texts):
        key = normalise(t)
        j = keeper.get(key)
        if j is None:
            keeper[key] = i
        elif _preferred(rows, i, j):
            dropped[j] = ("exact_duplicate", i)
            keeper[key] = i
        else:
            dropped[i] = ("exact_duplicate", j)
    for i, (reason, j) in list(dropped.items()):  # point at the final survivor
        dropped[i] = (reason, keeper[normalise(texts[i])])
    if mode == "exact":
        return dropped

    from datasketch import MinHash, MinHashLSH

    alive = sorted(keeper.values())
    sets = {i: shingles(texts[i]) for i in alive}
    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    hashes = MinHash.bulk([[s.encode() for s in sets[i]] for i in alive], num_perm=NUM_PERM, seed=seed + 1)
    parent = {i: i for i in alive}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, h in zip(alive, hashes):
        for j in lsh.query(h):
            a, b = sets[i], sets[j]
            if len(a & b) >= threshold * len(a | b):  # confirm: LSH only proposes candidates
                ri, rj = root(i), root(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
        lsh.insert(i, h)
    clusters: dict[int, list[int]] = {}
    for i in alive:
        clusters.setdefault(root(i), []).append(i)
    for members in clusters.values():
        if len(members) < 2:
            continue
        best = members[0]
        for i in members[1:]:
            if _preferred(rows, i, best):
                best = i
        for i in members:
            if i != best:
                dropped[i] = ("near_duplicate", best)
        for i, (reason, j) in list(dropped.items()):
            if j in members and j != best:
                dropped[i] = (reason, best)
    return dropped


def keep_mask(n: int, dropped: dict[int, tuple[str, int]]) -> np.ndarray:
    mask = np.ones(n, dtype=bool)
    mask[list(dropped)] = False
    return mask
