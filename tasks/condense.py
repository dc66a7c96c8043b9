"""Condense the synthesized training set: a smaller subset that keeps every group and label.

    stillhouse stage condense --domain healthcare      # what `dvc repro condense@healthcare` runs

Inputs:  data/<domain>/synthesize/train.jsonl  (records + teacher outputs; see tasks/synthesize.py)
Outputs: data/<domain>/condense/train.jsonl    the kept rows, unchanged, in input order
         data/<domain>/condense/report.json    method, ratio, sizes, per-label / per-group /
                                               kept-rationale counts before and after, diversity
Params:  condense.method (random | kcenter), condense.ratio, condense.seed.

Budget: k = round(ratio * n) records (at least 1), exactly.

Quotas first (coverage, then shares). A *stratum* is one label, one value of one sensitive
attribute (`domain.sensitive_attributes`; a record without the attribute counts as
"(missing)"), or the set of rows with a kept rationale. A stratum with n_s records gets

    coverage_s     = min(n_s, MIN_PER_STRATUM)
    proportional_s = min(n_s, max(MIN_PER_STRATUM, floor(ratio * n_s)))

met in that order: every label and group present before is present after, small groups are
kept whole up to MIN_PER_STRATUM (a group of 3 is not cut to 1: the fairness stage needs its
members), and no stratum falls below its proportional share, so condensing cannot shift group
or label shares by more than rounding. When one partition's quotas (all labels, or all values
of one attribute) sum past the budget, the largest strata give way first (coverage down to 1).
Each pick serves the most constrained unmet stratum (fewest spare members), choosing among its
members one that serves the most unmet strata at once (the greedy rule for set multicover: one
record serves a label, a sex, a race and an age band), ties broken by the method: k-center
distance or the seeded random order. Early on nearly every row ties, so the quota phase is
k-center (or random) restricted to the rows the quotas still need. Any quota the budget could
not meet is listed in the report's `unmet_quotas` (empty unless k is below the stratum count).

Rationales: the kept-rationale stratum only guarantees the rationale task its proportional
share. Rows with a kept rationale are otherwise NOT preferred: they are the rows the teacher
already got right, and preferring them would select against the hard records (and the groups)
the teacher fails on, which is the bias the fairness stage measures.

Then fill (diversity). The rest of the budget goes by the method:
  kcenter  greedy k-center / farthest-first traversal (Sener & Savarese, 2018, "Active
           Learning for Convolutional Neural Networks: A Core-Set Approach", Alg. 1): repeatedly
           add the record farthest from everything kept so far, a 2-approximation of the
           minimax-radius cover. The first center (when no quota picked one) is drawn by seed.
  random   uniform sample in the seeded order.
Embeddings: TF-IDF (word 1-2 grams, sublinear tf) of the record text + TruncatedSVD to
EMBED_DIM (latent semantic analysis), L2-normalised: ~2 s for 10,000 notes on 2 cores, no model
download. Both methods are deterministic for the seed.

Diversity in the report: mean nearest-neighbour distance inside the set (higher: less
redundant), and the cover radius max_i min_{j kept} ||x_i - x_j|| over all records before
condensing (lower: every dropped record has a close kept neighbour; k-center's objective).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits

from domains import get_domain
from tasks.params import Condense, Params, stage_dir
from tasks.records import read_jsonl, write_json, write_jsonl

PARAMS = ("condense",)  # the params.yaml keys this stage reads (dvc.yaml lists the same)
MIN_PER_STRATUM = 5  # every stratum keeps min(n_s, 5) at least: small groups stay measurable
EMBED_DIM = 64  # SVD components: enough to separate topics, cheap for farthest-first
MISSING = "(missing)"
RATIONALE = ("rationale", "kept")  # the stratum of rows with a kept rationale


# ---------------------------------------------------------------------------------------------
# Embeddings and distances


def embed(texts: list[str], seed: int = 0, dim: int = EMBED_DIM) -> np.ndarray:
    """L2-normalised LSA embeddings `(n, d)` float32 of `texts` (TF-IDF + TruncatedSVD)."""
    n = len(texts)
    if n == 0:
        return np.zeros((0, 1), dtype=np.float32)
    try:
        tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2 if n >= 50 else 1,
                                max_features=50_000, dtype=np.float32).fit_transform(texts)
    except ValueError:  # no token at all (empty or punctuation-only texts)
        return np.zeros((n, 1), dtype=np.float32)
    k = min(dim, tfidf.shape[1] - 1, n - 1)
    x = TruncatedSVD(n_components=k, random_state=seed).fit_transform(tfidf) if k >= 2 else tfidf.toarray()
    return normalize(x).astype(np.float32)


def _sq_dist_to(x: np.ndarray, sq_norms: np.ndarray, i: int) -> np.ndarray:
    """Squared Euclidean distances `(n,)` from every row of `x` to row i."""
    return np.maximum(sq_norms + sq_norms[i] - 2.0 * (x @ x[i]), 0.0)


def nearest_distances(x: np.ndarray, ref: np.ndarray | None = None, chunk: int = 2048) -> np.ndarray:
    """For each row of `x` `(n, d)`, the distance to its nearest row of `ref` (itself excluded if None)."""
    same = ref is None
    ref = x if ref is None else ref
    if len(x) == 0 or len(ref) - same <= 0:
        return np.zeros(len(x), dtype=np.float32)
    ref_sq = (ref * ref).sum(1)
    out = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk]
        d = (block * block).sum(1)[:, None] + ref_sq[None, :] - 2.0 * block @ ref.T  # (b, m)
        if same:
            d[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        out[start : start + len(block)] = np.sqrt(np.maximum(d.min(1), 0.0))
    return out


# ---------------------------------------------------------------------------------------------
# Strata and quotas


def strata(rows: list[dict], attributes: tuple[str, ...]) -> list[list[tuple[str, str]]]:
    """Per row, the strata it belongs to: ("label", l), (attr, value) per attribute, rationale."""
    out = []
    for row in rows:
        groups = row.get("groups") or {}
        member = [("label", str(row.get("label")))]
        member += [(a, MISSING if groups.get(a) in (None, "") else str(groups[a])) for a in attributes]
        if row.get("rationale"):
            member.append(RATIONALE)
        out.append(member)
    return out


def _trim(q: dict, k: int, low: dict) -> dict:
    """Lower the largest quotas of one partition, never below `low`, until they sum to <= k."""
    q = dict(q)
    excess = sum(q.values()) - k
    while excess > 0:
        room = [s for s in q if q[s] > low[s]]
        if not room:
            break
        s = max(room, key=lambda s: (q[s], s))
        q[s] -= 1
        excess -= 1
    return q


def quotas(counts: Counter, ratio: float, k: int, floor: int = MIN_PER_STRATUM) -> tuple[dict, dict]:
    """(coverage, proportional) quotas per stratum, each fitted to the budget k per partition.

    coverage_s = min(n_s, floor); proportional_s = min(n_s, max(floor, floor(ratio * n_s))).
    A partition (the labels, the values of one attribute) whose quotas sum past k is trimmed from
    its largest strata down (coverage to 1 at the lowest), so rare strata keep theirs.
    """
    cover = {s: min(n, floor) for s, n in counts.items()}
    prop = {s: min(n, max(floor, math.floor(ratio * n + 1e-9))) for s, n in counts.items()}
    for part in {s[0] for s in counts}:
        keys = [s for s in counts if s[0] == part]
        c = _trim({s: cover[s] for s in keys}, k, {s: 1 for s in keys})
        p = _trim({s: prop[s] for s in keys}, k, c)
        cover.update(c)
        prop.update(p)
    return cover, prop


# ---------------------------------------------------------------------------------------------
# Selection


def _repair(m: np.ndarray, chosen: np.ndarray, have: np.ndarray, targets: list[np.ndarray], rounds: int = 500) -> None:
    """Swap kept rows for dropped ones while that lowers the unmet quota (in place).

    The unmet quota is lexicographic over `targets` (coverage before proportional shares).
    Greedy cover can end a quota or two short when the quotas of a partition sum to the whole
    budget (every pick must then serve every partition at once); a few swaps usually fix it.
    """
    weight = [float(len(m) + 1) ** (len(targets) - 1 - j) for j in range(len(targets))]

    def short(h: np.ndarray) -> np.ndarray:  # h (..., S) -> weighted unmet (...)
        return sum(w * np.maximum(t - h, 0.0).sum(-1) for w, t in zip(weight, targets))

    for _ in range(rounds):
        total = float(short(have))
        if total == 0:
            return
        unmet = (sum(np.maximum(t - have, 0.0) for t in targets) > 0).astype(np.float32)
        kept = np.flatnonzero(chosen)
        best = (total, -1, -1)
        for u in np.flatnonzero(~chosen & ((m @ unmet) > 0)):
            after = short(have + m[u] - m[kept])  # (kept,) unmet after swapping u in, each r out
            r = int(np.argmin(after))
            if after[r] < best[0] - 1e-6:
                best = (float(after[r]), int(u), int(kept[r]))
        if best[1] < 0:
            return
        _, u, r = best
        chosen[u], chosen[r] = True, False
        have += m[u] - m[r]


def select(
    x: np.ndarray,
    member: list[list[tuple[str, str]]],
    k: int,
    method: str,
    phases: list[dict[tuple[str, str], int]],
    seed: int = 0,
) -> list[int]:
    """Indices (sorted) of k rows: each quota phase in turn, then the method's fill; deterministic.

    `x` `(n, d)` embeddings (only read by kcenter); `member[i]` the strata of row i; `phases`
    quota dicts met in order (coverage, then proportional). Within a phase, each pick serves the
    most constrained unmet stratum (fewest spare members: available minus still needed), taking
    among its members one that serves the most unmet strata, ties broken by the method.
    """
    n = len(member)
    k = max(0, min(k, n))
    names = sorted({s for q in phases for s in q} | {s for ss in member for s in ss})
    col = {s: j for j, s in enumerate(names)}
    m = np.zeros((n, len(names)), dtype=np.float32)  # (n, S) membership
    for i, ss in enumerate(member):
        m[i, [col[s] for s in ss]] = 1.0
    have = np.zeros(len(names), dtype=np.float32)  # (S,) kept rows per stratum
    avail = m.sum(0)  # (S,) members not yet kept

    rng = np.random.default_rng(seed)
    order = rng.permutation(n)  # random: the tie-break and fill order
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    kcenter = method == "kcenter"
    if kcenter:
        x = x.astype(np.float32)
        sq = (x * x).sum(1)
        min_d = np.full(n, np.inf, dtype=np.float32)  # squared distance to the nearest kept row
    chosen = np.zeros(n, dtype=bool)
    picked: list[int] = []

    def take(i: int) -> None:
        chosen[i] = True
        picked.append(i)
        have[:] += m[i]
        avail[:] -= m[i]
        if kcenter:
            np.minimum(min_d, _sq_dist_to(x, sq, i), out=min_d)

    def tie_break(candidates: np.ndarray) -> int:
        if kcenter and picked:
            return int(candidates[np.argmax(min_d[candidates])])  # farthest from the kept set
        return int(candidates[np.argmin(rank[candidates])])  # first in the seeded order

    for quota in phases:
        target = np.array([quota.get(s, 0) for s in names], dtype=np.float32)
        while len(picked) < k:
            need = np.maximum(target - have, 0.0)
            unmet = (need > 0) & (avail > 0)
            if not unmet.any():
                break
            score = m @ unmet.astype(np.float32)  # (n,) unmet strata each row would serve
            score[chosen] = -1.0
            top = score >= score.max() - 1e-6
            slack = np.where(unmet, avail - need, np.inf)  # spare members per unmet stratum
            for s in np.argsort(slack, kind="stable")[: int(unmet.sum())]:  # most constrained first
                if (top & (m[:, s] > 0)).any():
                    top &= m[:, s] > 0
                    break
            take(tie_break(np.flatnonzero(top)))

    if phases and len(picked) == k:  # budget spent: swap until the quotas are met, if they can be
        _repair(m, chosen, have, [np.array([q.get(s, 0) for s in names], dtype=np.float32) for q in phases])
        picked = [int(i) for i in np.flatnonzero(chosen)]

    while len(picked) < k:
        if kcenter and picked:
            take(int(np.argmax(np.where(chosen, -1.0, min_d))))
        else:
            take(int(next(i for i in order if not chosen[i])))
    return sorted(picked)


# ---------------------------------------------------------------------------------------------
# The stage


def _counts(rows: list[dict], attributes: tuple[str, ...]) -> dict:
    member = strata(rows, attributes)
    flat = Counter(s for ss in member for s in ss)
    return {
        "n": len(rows),
        "labels": {v: c for (a, v), c in sorted(flat.items()) if a == "label"},
        "groups": {a: {v: c for (b, v), c in sorted(flat.items()) if b == a} for a in attributes},
        "kept_rationale": flat.get(RATIONALE, 0),
        "teacher_correct": sum(bool(r.get("correct")) for r in rows),
    }


def _diversity(x: np.ndarray, keep: list[int]) -> dict:
    if len(x) == 0 or not keep:
        return {"mean_nn_distance_before": 0.0, "mean_nn_distance_after": 0.0, "cover_radius": 0.0,
                "mean_distance_to_kept": 0.0}
    to_kept = nearest_distances(x, x[keep])
    return {
        "mean_nn_distance_before": round(float(nearest_distances(x).mean()), 6),
        "mean_nn_distance_after": round(float(nearest_distances(x[keep]).mean()), 6),
        "cover_radius": round(float(to_kept.max()), 6),  # k-center objective over all records
        "mean_distance_to_kept": round(float(to_kept.mean()), 6),
    }


def run(rows: list[dict], attributes: tuple[str, ...], params: Condense) -> tuple[list[dict], dict]:
    """The kept rows (unchanged, input order) and the report; pure, no files."""
    # One BLAS thread: thousands of small mat-vecs, where threads only add synchronisation
    # (measured on 2 busy cores: 10,000 embeddings in 0.65 s vs 1.5-5.7 s with two threads).
    with threadpool_limits(1):
        return _condense(rows, attributes, params)


def _condense(rows: list[dict], attributes: tuple[str, ...], params: Condense) -> tuple[list[dict], dict]:
    started = time.perf_counter()
    n = len(rows)
    k = min(n, max(1, round(params.ratio * n))) if n else 0
    member = strata(rows, attributes)
    cover, quota = quotas(Counter(s for ss in member for s in ss), params.ratio, k)
    t0 = time.perf_counter()
    x = embed([str(r.get("text", "")) for r in rows], params.seed)
    embed_seconds = time.perf_counter() - t0
    keep = select(x, member, k, params.method, [cover, quota], params.seed)
    kept = [rows[i] for i in keep]
    after = Counter(s for i in keep for s in member[i])
    unmet = {f"{a}={v}": q - after.get((a, v), 0) for (a, v), q in quota.items() if after.get((a, v), 0) < q}
    report = {
        "method": params.method,
        "ratio": params.ratio,
        "seed": params.seed,
        "min_per_stratum": MIN_PER_STRATUM,
        "n_before": n,
        "n_after": len(kept),
        "before": _counts(rows, attributes),
        "after": _counts(kept, attributes),
        "quotas": {f"{a}={v}": q for (a, v), q in sorted(quota.items())},  # after fitting to k
        "unmet_quotas": unmet,  # empty unless the budget is smaller than the number of strata
        "embedding": {"kind": "tfidf+svd", "dim": int(x.shape[1]), "seconds": round(embed_seconds, 3)},
        "diversity": _diversity(x, keep),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return kept, report


def main(domain: str, params: Params, root: Path) -> dict:
    """Read the synthesized train set, condense it, write train.jsonl and report.json."""
    rows = read_jsonl(stage_dir(root, domain, "synthesize") / "train.jsonl")
    if not rows:
        raise ValueError(f"condense: {stage_dir(root, domain, 'synthesize') / 'train.jsonl'} has no rows")
    kept, report = run(rows, get_domain(domain).sensitive_attributes, params.condense)
    out = stage_dir(root, domain, "condense")
    write_jsonl(out / "train.jsonl", kept)
    write_json(out / "report.json", {"domain": domain, **report})
    return {"n_before": report["n_before"], "n_after": report["n_after"], "method": report["method"],
            "unmet_quotas": len(report["unmet_quotas"])}
