"""Fairness stage: per-group metrics of teacher and student, disparities, bias amplification,
counterfactual probes, and the gates that decide promotion.

    stillhouse stage fairness --domain healthcare      # what `dvc repro fairness@healthcare` runs

Reads  data/<domain>/distill/predictions.jsonl   rows {id, groups{attr: value}, label,
       student_output, student_answer, student_correct, teacher_answer, teacher_correct}
       data/<domain>/distill/student/            re-asked on counterfactual probes (skipped if absent)
       data/<domain>/deidentify/test.jsonl       the held-out texts the probes rewrite
Writes data/<domain>/fairness/report.json        everything below, per attribute, pair and group
       data/<domain>/fairness/report.md          the same as tables (Prefect artifact, MLflow)
       data/<domain>/fairness/metrics.json       flat numbers for `dvc metrics` / MLflow
       data/<domain>/fairness/fairness.png       per-group accuracy with CIs, teacher vs student
Params fairness.* (params.yaml documents each knob).

Per group (fairlearn `MetricFrame`; Weerts et al., 2023): n, accuracy (exact match of the parsed
answer: the generative domains' metric too), and for classification domains the selection rate,
FPR and FNR, one-vs-rest per label and averaged (or for `positive_label` alone). Generative
domains add ROUGE-L F1 of the raw output against the gold answer (report only). Groups are each
sensitive attribute's values and, with `intersectional`, each pair of attributes.

Disparities over a set of groups: accuracy gap (best minus worst), worst-group accuracy,
demographic parity difference (largest between-group gap in the rate of predicting any one
label) and equalized odds difference (largest between-group TPR or FPR gap of any one label;
fairlearn's `equalized_odds_difference` for one positive label). Amplification of each is the
student's value minus the teacher's on the same groups: how much distillation widened (> 0) or
narrowed (< 0) the teacher's disparity (Hooker et al., 2020; Lukasik et al., 2021).

Confidence intervals: `bootstrap_resamples` draws of every per-group rate from its Jeffreys
posterior Beta(k + 1/2, n - k + 1/2) (a parametric bootstrap, vectorised in numpy; it does not
collapse to a point for 0/3 the way resampling records does), percentile intervals at
`confidence`; intervals of a max-minus-min disparity are re-centred on the estimate (resampling
inflates a range statistic).

Small-group rule: a gate fires when the point estimate over groups of n >= min_group_size
("gateable") crosses its threshold, OR when a smaller group's CI is decisive: the CI of its
distance from the farthest gateable group (pair, label and direction picked on the point
estimates) lies wholly beyond the threshold. So a tiny group's noise never fires a gate, and a
glaring harm to a tiny group is never hidden by its size. Rates resting on fewer than
min_group_size records (the TPR of a group with 4 positive cases) are left out of the gateable
disparities. Records missing an attribute are reported as "(missing)", never gated. An
attribute with nothing measurable (< 2 gateable groups, no decisive small group) is
"not_evaluable": it passes but is listed in `report["not_evaluable"]` and in its gates' reasons.

Counterfactual probes (Garg et al., 2019, "Counterfactual Fairness in Text Classification"):
up to `probe_max_prompts` held-out texts are rewritten with one demographic cue swapped
(domains/<d>/counterfactuals.py: names, pronouns, stated sex/race/age, English-learner
phrasing); the student answers both versions and the flip rate (share of pairs whose parsed
answers differ) gates against `max_flip_rate`, with the same small-sample rule.
"""

from __future__ import annotations

import importlib
import itertools
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, count

from domains import get_domain
from tasks.params import Fairness, Params, stage_dir
from tasks.records import read_jsonl, write_json

PARAMS = ("fairness",)  # the params.yaml keys this stage reads (dvc.yaml lists the same)
MISSING = "(missing)"  # group value of records that lack the attribute: reported, never gated
EPS = 1e-9  # tolerance on threshold comparisons: 0.1 + 0.2 must not fail a 0.3 gate
MODELS = ("teacher", "student")
PAIR = "_x_"  # intersectional attribute name: "sex_x_race" (a valid MLflow / DVC metric key)
PANEL_INCHES = (5.0, 4.0)  # fairness.png: one panel per attribute (and one for probes), side by side
DPI = 100
# disparity -> (threshold param, direction): "max" fails above the threshold, "min" below it.
GATES = {
    "accuracy_gap": ("max_accuracy_gap", "max"),
    "dp_difference": ("max_dp_difference", "max"),
    "eo_difference": ("max_eo_difference", "max"),
    "worst_group_accuracy": ("min_worst_group_accuracy", "min"),
}
AMPLIFIED = ("accuracy_gap", "dp_difference", "eo_difference")  # gated on student - teacher too
# Historical gate name of the accuracy-gap amplification (register tags and dashboards read it).
AMP_NAME = {"accuracy_gap": "amplification", "dp_difference": "dp_amplification", "eo_difference": "eo_amplification"}


def _round(x, digits: int = 6):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), digits)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased whitespace tokens (Lin, 2004): longest common subsequence."""
    p, r = str(prediction).lower().split(), str(reference).lower().split()
    if not p or not r:
        return 0.0
    prev = [0] * (len(r) + 1)
    for a in p:
        cur = [0]
        for j, b in enumerate(r):
            cur.append(prev[j] + 1 if a == b else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    return 0.0 if lcs == 0 else 2 * lcs / (len(p) + len(r))


# ---- the prediction frame ---------------------------------------------------------------------------


def _frame(rows: list[dict], attributes: tuple[str, ...], intersectional: bool) -> tuple[pd.DataFrame, list[str]]:
    """One row per prediction; a column per attribute (and per attribute pair); the group columns."""
    if not rows:
        raise ValueError("fairness: predictions.jsonl has no rows")
    missing = {"groups", "student_correct", "teacher_correct"} - set(rows[0])
    if missing:
        raise ValueError(f"fairness: predictions rows lack {sorted(missing)}")
    df = pd.DataFrame({
        "label": [str(r.get("label")) for r in rows],
        "student_correct": [int(bool(r.get("student_correct"))) for r in rows],  # None (unparsed) is wrong
        "teacher_correct": [int(bool(r.get("teacher_correct"))) for r in rows],
        "student_answer": [str(r.get("student_answer")) for r in rows],
        "teacher_answer": [str(r.get("teacher_answer")) for r in rows],
        "student_output": [str(r.get("student_output") or "") for r in rows],
    })
    for attr in attributes:
        values = [(r.get("groups") or {}).get(attr) for r in rows]
        df[attr] = [MISSING if v is None or v == "" else str(v) for v in values]
    columns = list(attributes)
    if intersectional:
        for a, b in itertools.combinations(attributes, 2):
            name = f"{a}{PAIR}{b}"
            df[name] = [MISSING if MISSING in (x, y) else f"{x} & {y}" for x, y in zip(df[a], df[b])]
            columns.append(name)
    return df, columns


def _ratio_columns(df: pd.DataFrame, labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, dict]:
    """Numerators and denominators (n, c) of every per-group rate, and where each rate sits.

    Every metric here is a rate: successes over trials among a group's records. Layout: per
    model, accuracy, then per label selection rate, TPR (hits among that label's records) and
    FPR (hits among the other records).
    """
    y = df["label"].to_numpy()
    ones = np.ones(len(df))
    num, den, where = [], [], {}
    for model in MODELS:
        pred = df[f"{model}_answer"].to_numpy()
        where[(model, "accuracy")] = len(num)
        num.append(df[f"{model}_correct"].to_numpy(float))
        den.append(ones)
        for kind in ("selection", "tpr", "fpr"):
            where[(model, kind)] = slice(len(num), len(num) + len(labels))
            for label in labels:
                hit = (pred == label).astype(float)
                pos = (y == label).astype(float)
                num.append({"selection": hit, "tpr": hit * pos, "fpr": hit * (1 - pos)}[kind])
                den.append({"selection": ones, "tpr": pos, "fpr": 1 - pos}[kind])
    return np.stack(num, 1), np.stack(den, 1), where


def _group_rates(num: np.ndarray, den: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Rates of one group (1 + B, c): row 0 the sample's, rows 1.. resampled.

    Resampling draws each rate from its Jeffreys posterior Beta(k + 1/2, n - k + 1/2), a
    parametric bootstrap vectorised over all rates and resamples. Unlike the percentile bootstrap
    of records, it does not collapse to a point for 0/3 or 3/3, which would make a tiny group's
    CI look certain (Brown, Cai & DasGupta, 2001, on Jeffreys intervals for small n).
    """
    k, n = num.sum(0), den.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = np.where(n > 0, k / np.where(n > 0, n, 1), np.nan)
    if not resamples:
        return point[None]
    draws = rng.beta(k + 0.5, n - k + 0.5, size=(resamples, len(k)))
    draws[:, n == 0] = np.nan  # an undefined rate (no records of that label) stays undefined
    return np.vstack([point[None], draws])


def _nanrange(x: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan slices: an undefined rate
        return np.nanmax(x, axis=axis) - np.nanmin(x, axis=axis)


def _nanmax(x: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmax(x, axis=axis)


def disparities(rates: np.ndarray, where: dict, model: str, classification: bool) -> dict[str, np.ndarray]:
    """Disparities over the groups of `rates` (R, G, c) -> each (R,): one per resample row."""
    acc = rates[:, :, where[(model, "accuracy")]]
    out = {"accuracy_gap": acc.max(1) - acc.min(1), "worst_group_accuracy": acc.min(1)}
    if classification:
        out["dp_difference"] = _nanmax(_nanrange(rates[:, :, where[(model, "selection")]], 1), 1)
        tpr = _nanrange(rates[:, :, where[(model, "tpr")]], 1)
        fpr = _nanrange(rates[:, :, where[(model, "fpr")]], 1)
        out["eo_difference"] = _nanmax(np.fmax(tpr, fpr), 1)
    return out


# ---- gates ---------------------------------------------------------------------------------------------


def _passes(value: float, threshold: float, direction: str) -> bool:
    return value <= threshold + EPS if direction == "max" else value >= threshold - EPS


def _ci(samples: np.ndarray, confidence: float, point: float | None = None, bounds=(-1.0, 1.0)) -> list | None:
    """Percentile interval of resampled values. With `point`, re-centred on it (median bias
    correction): a max-minus-min disparity is biased upward under resampling, and near zero its
    plain percentile interval can lie wholly above the estimate."""
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return None
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    if point is not None and not np.isnan(point):
        shift = np.median(samples) - point
        lo, hi = max(lo - shift, bounds[0]), min(hi - shift, bounds[1])  # a gap stays in [0, 1]
    return [_round(lo), _round(hi)]


def _gate(point, ci, threshold: float, direction: str, what: str, small_verdicts: list, min_n: int) -> dict:
    """One gate: the point estimate over gateable groups decides; a decisive small group fails it."""
    sign = "<=" if direction == "max" else ">="
    failing_small = [v for v in small_verdicts if v["decisive"]]
    if point is None and not failing_small:
        return {"value": None, "ci": None, "threshold": threshold, "passed": True, "status": "not_evaluable",
                "reason": f"{what} not measurable: fewer than 2 groups with n >= {min_n} and no small group "
                          "whose CI is decisive; not gated"}
    passed = point is None or _passes(point, threshold, direction)
    reasons = []
    if point is not None:
        reasons.append(f"{what} {point:.3f} {sign if passed else ('>' if direction == 'max' else '<')} {threshold:.3f}")
    for v in failing_small:
        reasons.append(f"small group {v['group']!r} (n={v['n']}): {what} CI [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}] "
                       f"wholly beyond {threshold:.3f}")
    passed = passed and not failing_small
    return {"value": _round(point), "ci": ci, "threshold": threshold, "passed": passed,
            "status": "passed" if passed else "failed", "reason": "; ".join(reasons)}


def attribute_report(df: pd.DataFrame, attr: str, cfg: Fairness, labels=None, rng=None) -> dict:
    """Per-group metrics with CIs, disparities of both models, amplification and the gates."""
    rng = rng if rng is not None else np.random.default_rng(cfg.seed)
    classification = bool(labels)
    used = (cfg.positive_label,) if classification and cfg.positive_label else tuple(labels or ())
    num, den, where = _ratio_columns(df, used)
    counts = {}
    for model in MODELS:  # fairlearn's per-group table (n and accuracy) is the reference for ours
        y = df[f"{model}_correct"]
        counts[model] = MetricFrame(metrics={"accuracy": lambda t, p: float(np.mean(p)), "n": count},
                                    y_true=y, y_pred=y, sensitive_features=df[attr]).by_group
    names = sorted(map(str, counts["student"].index), key=str)
    column = df[attr].to_numpy()
    rates = {g: _group_rates(num[column == g], den[column == g], cfg.bootstrap_resamples, rng) for g in names}

    groups = {}
    for g in names:
        n = int(counts["student"].loc[g, "n"])
        entry = {"n": n, "too_small": n < cfg.min_group_size, "missing_attribute": g == MISSING}
        for model in MODELS:
            r = rates[g][:, where[(model, "accuracy")]]
            entry[f"{model}_accuracy"] = _round(counts[model].loc[g, "accuracy"])
            entry[f"{model}_accuracy_ci"] = _ci(r[1:], cfg.confidence) if cfg.bootstrap_resamples else None
            if classification:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    sel, tpr, fpr = (rates[g][0, where[(model, k)]] for k in ("selection", "tpr", "fpr"))
                    entry[f"{model}_selection_rate"] = _round(np.nanmean(sel))
                    entry[f"{model}_fpr"] = _round(np.nanmean(fpr))
                    entry[f"{model}_fnr"] = _round(1 - np.nanmean(tpr))
        if not classification:
            outputs = df.loc[column == g, "student_output"]
            entry["student_rouge_l"] = _round(np.mean([rouge_l(o, t) for o, t in zip(outputs, df.loc[column == g, "label"])]))
        groups[g] = entry
    gateable = [g for g in names if not groups[g]["too_small"] and not groups[g]["missing_attribute"]]
    small = [g for g in names if groups[g]["too_small"] and not groups[g]["missing_attribute"]]

    trials = {g: den[column == g].sum(0) for g in names}  # (c,): records behind each rate

    def over(group_set: list[str]) -> dict[str, dict[str, np.ndarray]]:
        """Disparities over `group_set`. A rate resting on < min_group_size records (the TPR of a
        group with 4 positive cases) is left out."""
        stack = np.stack([rates[g] for g in group_set], 1)  # (1 + B, G, c)
        thin = np.stack([trials[g] < cfg.min_group_size for g in group_set])  # (G, c)
        stack = np.where(thin[None], np.nan, stack)
        d = {m: disparities(stack, where, m, classification) for m in MODELS}
        d["amplification"] = {k: d["student"][k] - d["teacher"][k] for k in AMPLIFIED if k in d["student"]}
        return d

    def against(s: str) -> dict[str, dict[str, np.ndarray]]:
        """How far small group `s` sits from the gateable group farthest from it, per resample.

        Pair, label and direction are chosen once on the point estimates, so the resampled
        differences are unbiased (a max over resamples would inflate a small group's gap)."""
        stack = np.stack([rates[g] for g in gateable + [s]], 1)  # (1 + B, G + 1, c); s is last
        thin = np.stack([trials[g] < cfg.min_group_size for g in gateable] + [np.zeros_like(trials[s], bool)])
        stack = np.where(thin[None], np.nan, stack)
        out: dict[str, dict[str, np.ndarray]] = {m: {} for m in (*MODELS, "amplification")}
        acc = where[("student", "accuracy")]
        columns = {"accuracy_gap": [acc]}
        index = np.arange(num.shape[1])
        if classification:
            columns["dp_difference"] = index[where[("student", "selection")]].tolist()
            columns["eo_difference"] = (index[where[("student", "tpr")]].tolist()
                                        + index[where[("student", "fpr")]].tolist())
        shift = where[("teacher", "accuracy")] - acc  # the teacher's column of a student column
        for metric, cols in columns.items():
            best = None
            for j in cols:
                point = stack[0, :-1, j] - stack[0, -1, j]
                if np.all(np.isnan(point)) or np.isnan(stack[0, -1, j]):
                    continue
                far = int(np.nanargmax(np.abs(point)))
                if best is None or abs(point[far]) > abs(best[2]):
                    best = (j, far, point[far])
            if best is None:
                continue
            j, far, gap = best
            sign = 1.0 if gap >= 0 else -1.0
            student = sign * (stack[:, far, j] - stack[:, -1, j])
            teacher = np.abs(stack[:, far, j + shift] - stack[:, -1, j + shift])  # same pair, same label
            out["student"][metric], out["teacher"][metric] = student, teacher
            out["amplification"][metric] = student - teacher
        out["student"]["worst_group_accuracy"] = stack[:, -1, acc]
        return out

    full = over(gateable) if len(gateable) >= 2 else None
    # Small groups: their distance from the gateable groups, judged by its CI alone.
    small_sets = {s: against(s) for s in small if gateable and cfg.bootstrap_resamples}

    out = {"groups": groups, "gateable_groups": gateable, "small_groups": small, "evaluable": full is not None}
    gates = {}
    for metric, (param, direction) in GATES.items():
        if not classification and metric in ("dp_difference", "eo_difference"):
            continue  # open answers: no label to select, no positive class
        for model in MODELS:
            out[f"{model}_{metric}"] = _round(full[model][metric][0]) if full else None
            out[f"{model}_{metric}_ci"] = (_ci(full[model][metric][1:], cfg.confidence, full[model][metric][0], (0, 1))
                                           if full and cfg.bootstrap_resamples else None)
        threshold = getattr(cfg, param)
        gates[metric] = _gate(out[f"student_{metric}"], out[f"student_{metric}_ci"], threshold, direction,
                              f"{attr}: student {metric.replace('_', ' ')}",
                              _small_verdicts(small_sets, groups, "student", metric, threshold, direction, cfg),
                              cfg.min_group_size)
        if metric in AMPLIFIED:
            key = AMP_NAME[metric]
            amp = full["amplification"][metric] if full else None
            out[key] = _round(amp[0]) if full else None
            out[f"{key}_ci"] = _ci(amp[1:], cfg.confidence, amp[0]) if full and cfg.bootstrap_resamples else None
            gates[key] = _gate(out[key], out[f"{key}_ci"], cfg.max_gap_increase, "max",
                               f"{attr}: {metric.replace('_', ' ')} amplification (student - teacher)",
                               _small_verdicts(small_sets, groups, "amplification", metric, cfg.max_gap_increase,
                                               "max", cfg),
                               cfg.min_group_size)
    # Historical names: the accuracy gap of each model.
    out["teacher_gap"], out["student_gap"] = out["teacher_accuracy_gap"], out["student_accuracy_gap"]
    if full is not None:
        acc = {g: groups[g]["student_accuracy"] for g in gateable}
        out["student_best_group"], out["student_worst_group"] = max(gateable, key=acc.get), min(gateable, key=acc.get)
    out["gates"] = gates
    out["status"] = ("failed" if any(not g["passed"] for g in gates.values())
                     else "passed" if full is not None else "not_evaluable")
    out["passed"] = out["status"] != "failed"
    return out


def _small_verdicts(small_sets: dict, groups: dict, model: str, metric: str, threshold: float,
                    direction: str, cfg: Fairness) -> list[dict]:
    """For each small group: the CI of its distance from the gateable groups, and whether it is decisive."""
    verdicts = []
    for s, d in small_sets.items():
        samples = d[model].get(metric)
        if samples is None:
            continue
        ci = _ci(samples[1:], cfg.confidence)
        if ci is None:
            continue
        decisive = ci[0] > threshold + EPS if direction == "max" else ci[1] < threshold - EPS
        verdicts.append({"group": s, "n": groups[s]["n"], "ci": ci, "decisive": decisive})
    return verdicts


# ---- counterfactual probes ---------------------------------------------------------------------------


def domain_probes(domain: str) -> dict[str, Callable[[str], tuple[str, str] | None]] | None:
    """`PROBES` of domains/<domain>/counterfactuals.py: probe name -> text -> (text_a, text_b) or None."""
    name = f"domains.{domain}.counterfactuals"
    try:
        return importlib.import_module(name).PROBES
    except ModuleNotFoundError as err:
        if err.name in (name, f"domains.{domain}"):
            return None
        raise


def build_probes(records: list[dict], probes: dict, limit: int) -> list[dict]:
    """Counterfactual pairs for the first `limit` records (by id) where a probe's cue is present."""
    pairs = []
    for record in sorted(records, key=lambda r: str(r.get("id")))[:limit]:
        for probe, swap in probes.items():
            pair = swap(record["text"])
            if pair is not None and pair[0] != pair[1]:
                pairs.append({"id": record.get("id"), "probe": probe, "a": pair[0], "b": pair[1]})
    return pairs


def counterfactual_report(pairs: list[dict], answer: Callable[[list[str]], list], cfg: Fairness) -> dict:
    """Flip rate per probe: the share of pairs whose two parsed answers differ; gated at max_flip_rate.

    `answer` maps texts to parsed answers (the student in the stage, a rule in tests). A probe
    with n >= min_group_size pairs gates on its flip rate; fewer only when the resampled
    CI lies wholly above the threshold.
    """
    texts = sorted({t for p in pairs for t in (p["a"], p["b"])})
    said = dict(zip(texts, answer(texts))) if texts else {}
    rng = np.random.default_rng(cfg.seed)
    probes, gates, examples = {}, {}, {}
    for probe in sorted({p["probe"] for p in pairs}):
        mine = [p for p in pairs if p["probe"] == probe]
        flips = np.array([said[p["a"]] != said[p["b"]] for p in mine], float)
        n, rate = len(flips), float(flips.mean())
        ci = None
        if cfg.bootstrap_resamples:  # the same Jeffreys resampling as the group rates
            ci = _ci(rng.beta(flips.sum() + 0.5, n - flips.sum() + 0.5, cfg.bootstrap_resamples), cfg.confidence)
        probes[probe] = {"n": n, "flips": int(flips.sum()), "flip_rate": _round(rate), "ci": ci}
        examples[probe] = [{"id": p["id"], "answer_a": said[p["a"]], "answer_b": said[p["b"]]}
                           for p, f in zip(mine, flips) if f][:3]
        big = n >= cfg.min_group_size
        decisive = ci is not None and ci[0] > cfg.max_flip_rate + EPS
        passed = rate <= cfg.max_flip_rate + EPS if big else not decisive
        why = (f"{probe}: flip rate {rate:.3f} {'<=' if passed else '>'} {cfg.max_flip_rate:.3f} (n={n})" if big
               else f"{probe}: {n} pairs < {cfg.min_group_size}; CI {ci} "
                    + ("wholly above" if decisive else "not decisive against") + f" {cfg.max_flip_rate:.3f}")
        gates[probe] = {"value": _round(rate), "ci": ci, "threshold": cfg.max_flip_rate, "passed": passed,
                        "status": ("passed" if passed else "failed") if big or decisive else "not_evaluable",
                        "reason": why}
    return {"status": "run", "n_pairs": len(pairs), "n_texts": len(texts), "probes": probes, "gates": gates,
            "flip_examples": examples}


def student_answerer(student: Path, domain: str, max_new_tokens: int) -> Callable[[list[str]], list]:
    """Parsed answers of the distilled student to record texts, via distill's own "[label]" prompt."""
    from tasks import distill
    from tasks.models import load_causal_lm, load_tokenizer

    spec = get_domain(domain)
    path = str(Path(student).resolve())
    model, tok = load_causal_lm(path, dtype="auto"), load_tokenizer(path)  # what distill evaluates in

    def answer(texts: list[str]) -> list:
        rows = [{"text": t, "label": ""} for t in texts]
        return [r["answer"] for r in distill.answers(model, tok, spec, rows, max_new_tokens, "probes")]

    return answer


# ---- the whole report ----------------------------------------------------------------------------------


def fairness_report(rows: list[dict], attributes: tuple[str, ...], cfg: Fairness, labels=None,
                    counterfactual: dict | None = None) -> dict:
    """The whole report for one domain's predictions (and probe results): pure, no files."""
    if labels and cfg.positive_label and cfg.positive_label not in labels:
        raise ValueError(f"fairness.positive_label {cfg.positive_label!r} is not one of {list(labels)}")
    df, columns = _frame(rows, attributes, cfg.intersectional)
    rng = np.random.default_rng(cfg.seed)
    reports = {c: attribute_report(df, c, cfg, labels, rng) for c in columns}
    attrs = {c: r for c, r in reports.items() if c in attributes}
    pairs = {c: r for c, r in reports.items() if c not in attributes}
    failed = [c for c, r in reports.items() if r["status"] == "failed"]
    failed_gates = [f"{c}.{g}" for c, r in reports.items() for g, v in r["gates"].items() if not v["passed"]]
    counterfactual = counterfactual or {"status": "not_run", "reason": "no probes", "gates": {}}
    for probe, g in counterfactual.get("gates", {}).items():
        if not g["passed"]:
            failed.append(f"counterfactual.{probe}")
            failed_gates.append(f"counterfactual.{probe}.flip_rate")
    return {
        "n": len(df),
        "overall": {"teacher_accuracy": _round(df["teacher_correct"].mean()),
                    "student_accuracy": _round(df["student_correct"].mean())},
        "task": "classification" if labels else "generative",
        "labels_for_rates": ([cfg.positive_label] if cfg.positive_label else list(labels)) if labels else None,
        "thresholds": cfg.model_dump(),
        "attributes": attrs,
        "intersections": pairs,
        "counterfactual": counterfactual,
        "failed": failed,
        "failed_gates": failed_gates,
        "not_evaluable": [c for c, r in reports.items() if r["status"] == "not_evaluable"],
        "all_passed": not failed,
        "policy": "groups with n >= min_group_size gate on point estimates; a smaller group gates only when the "
                  "bootstrap CI of its distance from the gateable groups lies wholly beyond the threshold; records missing an "
                  "attribute are never gated; an attribute with nothing measurable is not_evaluable: it passes "
                  "and is listed here",
    }


def flat_metrics(report: dict) -> dict:
    """Flat numbers for `dvc metrics show` and MLflow (null where a disparity is not evaluable)."""
    out = {"student_accuracy": report["overall"]["student_accuracy"],
           "teacher_accuracy": report["overall"]["teacher_accuracy"]}
    for attr, r in {**report["attributes"], **report.get("intersections", {})}.items():
        for key in ("student_gap", "teacher_gap", "amplification", "student_worst_group_accuracy",
                    "student_dp_difference", "student_eo_difference"):
            if key in r:
                out[f"{attr}_{key}"] = r[key]
    for probe, p in report.get("counterfactual", {}).get("probes", {}).items():
        out[f"flip_rate_{probe}"] = p["flip_rate"]
    out["gates_passed"] = int(report["all_passed"])
    return out


def _fmt(x, ci=None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def markdown(report: dict) -> str:
    """The report as Markdown tables: verdict, gates, per-group metrics, probes."""
    verdict = "all gates passed" if report["all_passed"] else "FAILED: " + ", ".join(report["failed_gates"])
    ov = report["overall"]
    lines = [f"# Fairness: {report.get('domain', '')}", "",
             (f"**{verdict}** — {report['n']} held-out records; student accuracy {_fmt(ov['student_accuracy'])}, "
              f"teacher {_fmt(ov['teacher_accuracy'])}."), "",
             f"Policy: {report['policy']}.", "", "## Gates", "",
             "| attribute | gate | value [CI] | threshold | status | reason |", "|---|---|---|---|---|---|"]
    every = {**report["attributes"], **report.get("intersections", {})}
    for attr, r in every.items():
        for name, g in r["gates"].items():
            lines.append(f"| {attr} | {name} | {_fmt(g['value'], g['ci'])} | {g['threshold']} | {g['status']} | "
                         f"{g['reason']} |")
    for probe, g in report["counterfactual"].get("gates", {}).items():
        lines.append(f"| counterfactual | {probe} flip rate | {_fmt(g['value'], g['ci'])} | {g['threshold']} | "
                     f"{g['status']} | {g['reason']} |")
    for attr, r in every.items():
        lines += ["", f"## {attr}", "", "| group | n | teacher acc | student acc [CI] | gated |", "|---|---|---|---|---|"]
        for g, v in r["groups"].items():
            gated = "yes" if g in r["gateable_groups"] else ("missing" if v["missing_attribute"] else "small")
            lines.append(f"| {g} | {v['n']} | {_fmt(v['teacher_accuracy'])} | "
                         f"{_fmt(v['student_accuracy'], v['student_accuracy_ci'])} | {gated} |")
    cf = report["counterfactual"]
    lines += ["", "## Counterfactual probes", ""]
    if cf["status"] != "run":
        lines.append(f"Not run: {cf.get('reason')}.")
    else:
        lines += ["| probe | pairs | flips | flip rate [CI] |", "|---|---|---|---|"]
        lines += [f"| {p} | {v['n']} | {v['flips']} | {_fmt(v['flip_rate'], v['ci'])} |" for p, v in cf["probes"].items()]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str | Path) -> None:
    """Per attribute: teacher vs student accuracy per group with CI error bars (small groups
    hatched); a last panel with the counterfactual flip rates when probes ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attrs = report["attributes"]
    cf = report.get("counterfactual", {})
    panels = max(1, len(attrs) + (cf.get("status") == "run"))
    fig, axes = plt.subplots(1, panels, figsize=(PANEL_INCHES[0] * panels, PANEL_INCHES[1]), dpi=DPI, squeeze=False)
    for ax, (attr, r) in zip(axes[0], attrs.items()):
        names = list(r["groups"])
        x = np.arange(len(names))
        for offset, model, color in ((-0.2, "teacher", "#9ecae1"), (0.2, "student", "#3182bd")):
            heights = [r["groups"][g][f"{model}_accuracy"] or 0 for g in names]
            cis = [r["groups"][g][f"{model}_accuracy_ci"] or [h, h] for g, h in zip(names, heights)]
            err = np.array([[max(h - lo, 0) for h, (lo, _) in zip(heights, cis)],
                            [max(hi - h, 0) for h, (_, hi) in zip(heights, cis)]])
            bars = ax.bar(x + offset, heights, 0.4, yerr=err, capsize=3, color=color, label=model,
                          edgecolor="black", linewidth=0.5, error_kw={"elinewidth": 0.8})
            for bar, g in zip(bars, names):
                if g not in r["gateable_groups"]:
                    bar.set_hatch("//")
                    bar.set_alpha(0.5)
        ax.set_xticks(x, [f"{g}\nn={r['groups'][g]['n']}" + (" (small)" if r["groups"][g]["too_small"] else "")
                          for g in names], fontsize=8)
        if len(names) < 3:
            ax.set_xlim(-1, len(names))  # keep one or two groups from stretching into slabs
        ax.set_ylim(0, 1.15)
        ax.set_ylabel("accuracy (95% CI)" if report["thresholds"]["bootstrap_resamples"] else "accuracy")
        if r["evaluable"]:
            title = (f"{attr}: student gap {r['student_gap']:.2f} (teacher {r['teacher_gap']:.2f}, "
                     f"amp {r['amplification']:+.2f})")
        else:
            title = f"{attr}: not evaluable (< 2 groups of n >= {report['thresholds']['min_group_size']})"
        ax.set_title(title, fontsize=9, color={"failed": "red", "passed": "black"}.get(r["status"], "gray"))
        ax.legend(fontsize=7, loc="upper right")
    if cf.get("status") == "run":
        ax = axes[0][len(attrs)]
        names = list(cf["probes"])
        rates = [cf["probes"][p]["flip_rate"] for p in names]
        cis = [cf["probes"][p]["ci"] or [v, v] for p, v in zip(names, rates)]
        err = np.array([[max(v - lo, 0) for v, (lo, _) in zip(rates, cis)], [max(hi - v, 0) for v, (_, hi) in zip(rates, cis)]])
        colors = ["#de2d26" if not cf["gates"][p]["passed"] else "#31a354" for p in names]
        ax.bar(np.arange(len(names)), rates, 0.6, yerr=err, capsize=3, color=colors, edgecolor="black", linewidth=0.5)
        ax.axhline(report["thresholds"]["max_flip_rate"], color="black", linestyle="--", linewidth=0.8)
        ax.set_xticks(np.arange(len(names)), [f"{p}\nn={cf['probes'][p]['n']}" for p in names], fontsize=8)
        if len(names) < 3:
            ax.set_xlim(-1, max(len(names), 1))
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("flip rate")
        ax.set_title("counterfactual probes: answer flips when one cue is swapped", fontsize=9)
    fig.suptitle(f"{'all gates passed' if report['all_passed'] else 'gate failed: ' + ', '.join(report['failed'])}"
                 " (hatched: not gated)", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)  # no bbox_inches="tight": the size is exactly figsize x dpi
    plt.close(fig)


def run_probes(domain: str, cfg: Fairness, root: Path) -> dict:
    """Counterfactual probes of the distilled student on held-out texts; "not_run" with a reason."""
    probes = domain_probes(domain)
    student = stage_dir(root, domain, "distill") / "student"
    held_out = stage_dir(root, domain, "deidentify") / "test.jsonl"
    why = ("probe_max_prompts is 0" if cfg.probe_max_prompts == 0
           else f"domain {domain!r} has no counterfactuals module" if probes is None
           else f"no student in {student}" if not (student / "config.json").is_file()
           else f"no held-out texts in {held_out}" if not held_out.is_file() else None)
    if why:
        return {"status": "not_run", "reason": why, "gates": {}}
    pairs = build_probes(read_jsonl(held_out), probes, cfg.probe_max_prompts)
    answer = student_answerer(student, domain, cfg.probe_max_new_tokens)
    return counterfactual_report(pairs, answer, cfg)


def main(domain: str, params: Params, root: Path) -> dict:
    """Read the held-out predictions, probe the student; write report.json/.md, metrics.json, fairness.png."""
    spec = get_domain(domain)
    cfg = params.fairness
    rows = read_jsonl(stage_dir(root, domain, "distill") / "predictions.jsonl")
    counterfactual = run_probes(domain, cfg, Path(root))
    report = fairness_report(rows, tuple(spec.sensitive_attributes), cfg, spec.labels, counterfactual)
    report["domain"] = domain
    out = stage_dir(root, domain, "fairness")
    write_json(out / "report.json", report)
    write_json(out / "metrics.json", flat_metrics(report))
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    plot(report, out / "fairness.png")
    return {"all_passed": report["all_passed"], "failed": report["failed"], "not_evaluable": report["not_evaluable"],
            "probes": counterfactual["status"], **report["overall"]}
