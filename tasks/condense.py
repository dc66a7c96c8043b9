"""Condense the synthesized training set: a smaller subset that keeps every group and label.

    stillhouse stage condense --domain healthcare      # what `dvc repro condense@healthcare` runs

Inputs:  data/<domain>/synthesize/train.jsonl  (records + teacher outputs; see tasks/synthesize.py)
Outputs: data/<domain>/condense/train.jsonl    the kept rows, unchanged, in input order (then any
                                               synthetic rows, marked `synthetic` + `provenance`)
         data/<domain>/condense/report.json    method, ratio, sizes, per-label / per-group /
                                               kept-rationale counts before and after, diversity,
                                               the ledger (in = out + dropped by reason)
         data/<domain>/condense/report.png     shares per label / group before and after, ledger
         data/<domain>/condense/dropped.jsonl  {id, reason, duplicate_of} per removed row (ids only)
Params:  condense.* (method, ratio, seed, dedup, near_threshold, embedding, scorer, scorer_layers,
         scorer_max_length, rationale_rows, augment, augment_teacher); deidentify.* (augmented
         rows only).

Pipeline: [augment] -> de-duplicate -> quotas + method -> kept rows. Methods:
  random       seeded uniform order (the baseline)
  kcenter      greedy k-center coreset over embeddings (Sener & Savarese 2018; below)
  ifd          Superfiltering: a small model's instruction-following difficulty, high first,
               IFD >= 1 last (Li et al. 2023, 2024; tasks/condensation/scoring.py)
  uncertainty  the teacher's doubt from synthesis (agreement, entropy, confidence), high first
  gradmatch    CRAIG facility location on last-layer gradient sketches (Mirzasoleiman et al.
               2020; tasks/condensation/gradmatch.py)
  prototype    distance to the nearest k-means centroid of the embeddings, easy (near) first
               by default: Sorscher et al. 2022's rule for small kept sets (scoring.py)
  ccs          coverage-centric coreset selection over a difficulty score (prototype distance
               or ifd): the budget spread evenly over score bins (Zheng et al. 2023; ccs.py)
  facility     facility location (tasks/condensation/facility.py): the rows that best stand in
               for all rows, dense regions weighted by their size. `facility_on: text` over the
               embeddings (cosine), per label; `answer` over the gold answers (TF-IDF cosine), so
               the kept rows' answers cover the answers the whole set would teach: frequent
               answers about once each instead of several times, more distinct ones. With
               `rationale_rows: first` only rows with a kept rationale are picked, chosen to
               stand in for every row, those without one included
De-duplication (`dedup`: none | exact | near, tasks/condensation/dedup.py) runs first for every
method; augmentation (`augment` > 0, tasks/condensation/augment.py) before it, default off.

Budget: k = round(ratio * n) records (at least 1), n the real input rows; exactly k unless fewer
rows survive de-duplication (then all of them).

Quotas first (coverage, then shares). A *stratum* is one label, one value of one sensitive
attribute (`domain.sensitive_attributes`; a record without the attribute counts as
"(missing)"), or one side of the rationale partition (rows with a kept rationale, rows
without). A stratum with n_s records gets

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

Rationales: the kept-rationale stratum guarantees the rationale task its proportional share,
and its complement (rows without one) does the same for the rest. Rows with a kept rationale
are otherwise NOT preferred: they are the rows the teacher already got right, and preferring
them would select against the hard records (and the groups) the teacher fails on, which is the
bias the fairness stage measures. The complement is what keeps that promise: with a quota on
the kept side alone, a kept row serves one more unmet stratum than a row without, so the greedy
cover took kept rows first (CQA at 10%: 89% of the kept rows had a rationale vs 76% of all).
`rationale_rows: first` is the opt-in other way: no quota on the rows without a rationale, and
rows with one go first wherever the method has a choice (ties in the quota phase, the fill), the
method's own order within each side. A row with a kept rationale carries both tasks of the
step-by-step objective and a label the teacher reached by itself; labels and groups keep their
quotas, so a group the teacher mostly fails still keeps its share, filled from its misses.
At 10% of CQA (400 steps, each row read 3.3 times) it lifted random order by 1.5 accuracy
points over five seeds; kcenter and prototype with it averaged 1.0 and 1.2 points over five
seeds each. At 200 steps (1.6 passes) the lift was 0.5 points, within noise (bench/README.md).
With `facility_on: answer` it kept 0.95 of the full-data gain at 10% over five seeds, 2.6 points
above random: the student learns which answers are right, so the kept rows should carry as many
of the set's answers as they can.

Then fill (diversity). The rest of the budget goes by the method:
  kcenter  greedy k-center / farthest-first traversal (Sener & Savarese, 2018, "Active
           Learning for Convolutional Neural Networks: A Core-Set Approach", Alg. 1): repeatedly
           add the record farthest from everything kept so far, a 2-approximation of the
           minimax-radius cover. The first center (when no quota picked one) is drawn by seed.
  random   uniform sample in the seeded order.
Embeddings: TF-IDF (word 1-2 grams, sublinear tf) of the record text + TruncatedSVD to
EMBED_DIM (latent semantic analysis), L2-normalised: ~2 s for 10,000 notes on 2 cores, no model
download. (`embedding: minilm` uses all-MiniLM-L6-v2 instead.) Every method is deterministic for the seed.
Score-based methods (ifd, uncertainty, gradmatch, prototype, ccs, facility) replace the seeded order by their ranking:
the quota phase breaks ties by it and the fill takes rows in it.

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
from threadpoolctl import threadpool_limits

from domains import get_domain
from tasks.condensation import dedup as dd
from tasks.condensation.embeddings import EMBED_DIM, lsa
from tasks.condensation.embeddings import embed as embed_texts
from tasks.params import Condense, Deidentify, Params, stage_dir
from tasks.records import read_jsonl, write_json, write_jsonl

PARAMS = ("condense", "deidentify")  # the params.yaml keys this stage reads (dvc.yaml lists the same)
MIN_PER_STRATUM = 5  # every stratum keeps min(n_s, 5) at least: small groups stay measurable
SCORED = ("ifd", "uncertainty", "gradmatch", "prototype", "ccs", "facility")  # methods that rank rows instead of the seeded order
MISSING = "(missing)"
RATIONALE = ("rationale", "kept")  # the stratum of rows with a kept rationale
NO_RATIONALE = ("rationale", "none")  # its complement: without it the quota greedy would favour kept rows


# ---------------------------------------------------------------------------------------------
# Embeddings and distances


def embed(texts: list[str], seed: int = 0, dim: int = EMBED_DIM) -> np.ndarray:
    """L2-normalised LSA embeddings `(n, d)` float32 (tasks/condensation/embeddings.py)."""
    return lsa(texts, seed, dim)


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


def strata(rows: list[dict], attributes: tuple[str, ...], complement: bool = True) -> list[list[tuple[str, str]]]:
    """Per row, the strata it belongs to: ("label", l), (attr, value) per attribute, and
    ("rationale", "kept" | "none") (without `complement`: only "kept")."""
    out = []
    for row in rows:
        groups = row.get("groups") or {}
        member = [("label", str(row.get("label")))]
        member += [(a, MISSING if groups.get(a) in (None, "") else str(groups[a])) for a in attributes]
        if row.get("rationale") or complement:
            member.append(RATIONALE if row.get("rationale") else NO_RATIONALE)
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
    order: np.ndarray | None = None,
    prefer: np.ndarray | None = None,
) -> list[int]:
    """Indices (sorted) of k rows: each quota phase in turn, then the method's fill; deterministic.

    `x` `(n, d)` embeddings (only read by kcenter); `member[i]` the strata of row i; `phases`
    quota dicts met in order (coverage, then proportional). Within a phase, each pick serves the
    most constrained unmet stratum (fewest spare members: available minus still needed), taking
    among its members one that serves the most unmet strata, ties broken by the method.
    `order` (a permutation of range(n), best first) replaces the seeded order: score-based methods.
    `prefer` `(n,)` bool: these rows go first wherever the method has a choice (ties and fill).
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
    order = rng.permutation(n) if order is None else np.asarray(order)  # the tie-break and fill order
    if prefer is not None:
        order = order[np.argsort(~prefer[order], kind="stable")]
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
        if prefer is not None and prefer[candidates].any():
            candidates = candidates[prefer[candidates]]
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

    ptr = 0
    while len(picked) < k:
        if kcenter and picked:
            open_ = ~chosen & prefer if prefer is not None and (~chosen & prefer).any() else ~chosen
            take(int(np.argmax(np.where(open_, min_d, -1.0))))
        else:
            while chosen[order[ptr]]:
                ptr += 1
            take(int(order[ptr]))
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


def priorities(rows: list[dict], params: Condense, domain=None, scorer=None,
               x: np.ndarray | None = None) -> tuple[np.ndarray | None, dict]:
    """The method's order over `rows` (best first; None: the seeded order) and what to report;
    `x`: the rows' embeddings (prototype)."""
    rng = np.random.default_rng(params.seed)
    tie = rng.permutation(len(rows))  # ties (equal scores) broken by the seed
    if params.method not in SCORED:
        return None, {}
    if params.method == "prototype" or (params.method == "ccs" and params.ccs_score == "prototype"):
        from tasks.condensation.scoring import prototype_distance

        if x is None:
            raise ValueError(f"condense.method={params.method} needs the rows' embeddings")
        d = prototype_distance(x, params.prototype_clusters, params.seed)
        report = {"distance_mean": round(float(d.mean()), 4) if len(d) else None}
        if params.method == "ccs":
            return _ccs(d, params), {"ccs_score": "prototype", **report}
        key = d if params.prototype_keep == "easy" else -d
        return tie[np.argsort(key[tie], kind="stable")], {"prototype_keep": params.prototype_keep, **report}
    if params.method == "facility":
        from tasks.condensation.facility import facility_order

        if params.facility_on == "answer":
            from tasks.condensation.embeddings import sparse_tfidf

            x = sparse_tfidf([answer(r) for r in rows])  # None: no answer has a word; then the seeded order
            if x is None:
                return None, {"facility_on": "answer", "picks": 0}
        if x is None:
            raise ValueError("condense.method=facility needs the rows' embeddings")
        k = _budget(params, len(rows))
        pickable = np.array([bool(r.get("rationale")) for r in rows]) if params.rationale_rows == "first" else None
        t0 = time.perf_counter()
        # per label, as CRAIG selects; not over the answers: they are the label space itself, and
        # one answer under several labels (CQA's letters) would be picked once per label
        strata = [str(r.get("label")) for r in rows] if params.facility_on == "text" else None
        with threadpool_limits(1):
            order, weights = facility_order(x, k, params.seed, strata=strata, kind="cosine", candidates=pickable)
        return order, {"facility_on": params.facility_on, "picks": len(weights),
                       "greedy_seconds": round(time.perf_counter() - t0, 2),
                       "weight_max": int(weights.max()) if len(weights) else 0,
                       "weight_median": float(np.median(weights)) if len(weights) else 0.0}
    if params.method == "uncertainty":
        from tasks.condensation.scoring import uncertainty

        u = uncertainty(rows)
        order = tie[np.argsort(-u[tie], kind="stable")]
        return order, {"uncertainty_mean": round(float(u.mean()), 4) if len(u) else None,
                       "rows_with_signal": int((u > 0).sum())}
    if domain is None:
        raise ValueError(f"condense.method={params.method} needs the domain (prompt format) and a scorer model")
    from tasks.condensation import gradmatch, scoring

    started = time.perf_counter()
    model, tok = scorer if scorer is not None else scoring.load_scorer(params.scorer, params.scorer_layers)
    if params.method in ("ifd", "ccs"):  # ccs here: ccs_score ifd
        s = scoring.ifd(rows, domain, model, tok, params.scorer_max_length)
        report = {"ifd_mean": round(float(s.mean()), 4), "ifd_at_least_1": int((s >= 1).sum()),
                  "scorer_seconds": round(time.perf_counter() - started, 2)}
        if params.method == "ccs":  # misaligned pairs (IFD >= 1) join the hardest bin without stretching the range
            return _ccs(np.minimum(s, 1.0), params), {"ccs_score": "ifd", **report}
        key = np.where(s < 1.0, -s, np.inf)  # IFD >= 1 (the instruction does not help): last
        return tie[np.argsort(key[tie], kind="stable")], report
    pairs = gradmatch.label_pairs(domain, tok, rows, params.scorer_max_length)
    g = gradmatch.gradient_sketches(model, pairs, tok.pad_token_id, params.seed)
    t0 = time.perf_counter()
    k = _budget(params, len(rows))
    with threadpool_limits(1):
        # per class, as CRAIG selects (and a greedy over each class alone is much cheaper)
        order, weights = gradmatch.craig_order(g, k, params.seed, strata=[str(r.get("label")) for r in rows])
    return order, {"sketch_dim": int(g.shape[1]), "gradient_seconds": round(t0 - started, 2),
                   "greedy_seconds": round(time.perf_counter() - t0, 2),
                   "craig_weight_max": int(weights.max()) if len(weights) else 0,
                   "craig_weight_median": float(np.median(weights)) if len(weights) else 0.0}


def _budget(params: Condense, n: int) -> int:
    """Rows a ranking method plans for: round(ratio * n), at least 1 (run() caps it at n)."""
    return max(1, round(params.ratio * n))


def answer(row: dict) -> str:
    """The gold answer's text: `answer` where the label is a key (CQA's letters), else the label."""
    return str(row.get("answer") or row.get("label") or "")


def _ccs(difficulty: np.ndarray, params: Condense) -> np.ndarray:
    from tasks.condensation.ccs import ccs_order

    k = _budget(params, len(difficulty))
    return ccs_order(difficulty, k, params.ccs_strata, params.ccs_prune_hard, params.seed)


def run(rows: list[dict], attributes: tuple[str, ...], params: Condense, *, domain=None, scorer=None,
        deid_config: Deidentify | None = None, teacher=None) -> tuple[list[dict], dict]:
    """The kept rows (unchanged, input order; synthetic ones last) and the report; pure, no files.

    `domain` (a Domain) is needed by ifd, gradmatch and augment; `scorer` / `teacher` = (model,
    tokenizer) already loaded (tests, bench), else loaded from params.
    """
    started = time.perf_counter()
    synthetic: list[dict] = []
    rejected: Counter = Counter()
    if params.augment > 0:
        if domain is None:
            raise ValueError("condense.augment needs the domain")
        from tasks.condensation.augment import augment

        model, tok = teacher if teacher is not None else (None, None)
        synthetic, rejected = augment(rows, domain, attributes, params.augment, params.augment_teacher,
                                      deid_config or Deidentify(), params.seed, model, tok)
    pool = rows + synthetic
    n_real = len(rows)
    k = min(n_real, _budget(params, n_real)) if n_real else 0
    dropped = dd.find_duplicates(pool, params.dedup, params.near_threshold, params.seed)
    alive = np.flatnonzero(dd.keep_mask(len(pool), dropped))
    cand = [pool[i] for i in alive]
    t0 = time.perf_counter()
    x_all = embed_texts([str(r.get("text", "")) for r in pool], params.embedding, params.seed)
    embed_seconds = time.perf_counter() - t0
    order, scored = priorities(cand, params, domain, scorer, x_all[alive])
    # One BLAS thread: thousands of small mat-vecs, where threads only add synchronisation
    # (measured on 2 busy cores: 10,000 embeddings in 0.65 s vs 1.5-5.7 s with two threads).
    with threadpool_limits(1):
        keep, report = _condense(cand, x_all[alive], attributes, params, min(k, len(cand)), order)
        report["diversity"] = _diversity(x_all, [int(alive[i]) for i in keep])
    kept_ids = {int(alive[i]) for i in keep}
    kept = [pool[i] for i in sorted(kept_ids)]
    reasons: dict[int, tuple[str, int | None]] = {i: dropped[i] for i in dropped}
    for i in range(len(pool)):
        if i not in kept_ids and i not in reasons:
            reasons[i] = ("not_selected", None)
    ledger = {
        "in": n_real, "synthetic_in": len(synthetic), "out": len(kept),
        "dropped": {r: c for r, c in sorted(Counter(v[0] for v in reasons.values()).items())},
        "synthetic_out": sum(bool(r.get("synthetic")) for r in kept),
        "augment_rejected": dict(rejected),
    }
    assert ledger["in"] + ledger["synthetic_in"] == ledger["out"] + sum(ledger["dropped"].values())
    report = {
        "method": params.method, "ratio": params.ratio, "seed": params.seed, "dedup": params.dedup,
        "rationale_rows": params.rationale_rows,
        "min_per_stratum": MIN_PER_STRATUM, "n_before": n_real, "n_after": len(kept), "budget": k,
        "before": _counts(rows, attributes), "after": _counts(kept, attributes),
        **report, "ledger": ledger,
        "scores": scored,
        "embedding": {"kind": "tfidf+svd" if params.embedding == "lsa" else "all-MiniLM-L6-v2",
                      "dim": int(x_all.shape[1]), "seconds": round(embed_seconds, 3)},
        "seconds": round(time.perf_counter() - started, 3),
    }
    dropped_rows = [{"id": pool[i]["id"], "reason": r, "duplicate_of": pool[j]["id"] if j is not None else None}
                    for i, (r, j) in sorted(reasons.items())]
    report["_dropped"] = dropped_rows  # main() writes it to dropped.jsonl and removes it
    return kept, report


def _condense(rows: list[dict], x: np.ndarray, attributes: tuple[str, ...], params: Condense, k: int,
              order: np.ndarray | None) -> tuple[list[int], dict]:
    """Indices into `rows` kept by quotas + the method, and the quota part of the report."""
    first = params.rationale_rows == "first"
    member = strata(rows, attributes, complement=not first)
    cover, quota = quotas(Counter(s for ss in member for s in ss), params.ratio, k)
    method = "kcenter" if params.method == "kcenter" else "random"  # scored methods: `order`
    prefer = np.array([bool(r.get("rationale")) for r in rows]) if first else None
    keep = select(x, member, k, method, [cover, quota], params.seed, order, prefer)
    after = Counter(s for i in keep for s in member[i])
    unmet = {f"{a}={v}": q - after.get((a, v), 0) for (a, v), q in quota.items() if after.get((a, v), 0) < q}
    return keep, {
        "quotas": {f"{a}={v}": q for (a, v), q in sorted(quota.items())},  # after fitting to k
        "unmet_quotas": unmet,  # empty unless the budget is smaller than the number of strata
    }


def main(domain: str, params: Params, root: Path) -> dict:
    """Read the synthesized train set, condense it, write train.jsonl, report.json/png, dropped.jsonl."""
    from tasks.condensation.report import plot

    rows = read_jsonl(stage_dir(root, domain, "synthesize") / "train.jsonl")
    if not rows:
        raise ValueError(f"condense: {stage_dir(root, domain, 'synthesize') / 'train.jsonl'} has no rows")
    d = get_domain(domain)
    kept, report = run(rows, d.sensitive_attributes, params.condense, domain=d, deid_config=params.deidentify)
    out = stage_dir(root, domain, "condense")
    write_jsonl(out / "train.jsonl", kept)
    write_jsonl(out / "dropped.jsonl", report.pop("_dropped"))
    write_json(out / "report.json", {"domain": domain, **report})
    plot(report, out / "report.png")
    return {"n_before": report["n_before"], "n_after": report["n_after"], "method": report["method"],
            "unmet_quotas": len(report["unmet_quotas"]), "dropped": report["ledger"]["dropped"]}
