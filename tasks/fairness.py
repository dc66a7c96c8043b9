"""Fairness stage: per-group accuracy of teacher and student, gaps, bias amplification, gates.

    stillhouse stage fairness --domain healthcare      # what `dvc repro fairness@healthcare` runs

Reads  data/<domain>/distill/predictions.jsonl   rows {id, groups{attr: value}, label,
       student_answer, student_correct, teacher_answer, teacher_correct} (held-out set).
Writes data/<domain>/fairness/report.json        everything below, per attribute and group
       data/<domain>/fairness/metrics.json       flat numbers for `dvc metrics` / MLflow
       data/<domain>/fairness/fairness.png       teacher vs student accuracy per group
Params fairness.min_group_size, max_accuracy_gap, max_gap_increase.

For each sensitive attribute of the domain, fairlearn's `MetricFrame` gives the accuracy of
teacher and student per group (Weerts et al., 2023, "Fairlearn: Assessing and Improving
Fairness of AI Systems"). The disparity of an attribute is the best minus the worst group
accuracy among groups of at least `min_group_size` records (fairlearn's
`MetricFrame.difference()` restricted to those groups); smaller groups and records missing the
attribute are reported, flagged, and never gated, because a handful of records makes a gap
noise. Bias amplification is the student gap minus the teacher gap: how much distillation
widened (positive) or narrowed (negative) the teacher's disparity (Hooker et al., 2020,
"Characterising Bias in Compressed Models"; Lukasik et al., 2021, on distillation).

Gates, per attribute: student gap <= max_accuracy_gap and amplification <= max_gap_increase.
An attribute with fewer than two gateable groups is "not_evaluable": it passes (no gap can be
measured, and blocking on it would make a domain with sparse groups unpromotable) but is listed
in `report["not_evaluable"]` and in every gate's reason, so a reader never mistakes it for
a measured pass. For classification domains (closed label set) the report adds each model's
demographic-parity difference: the largest between-group difference in the rate of predicting
any one label, a report-only figure.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, count, selection_rate

from domains import get_domain
from tasks.params import Fairness, Params, stage_dir
from tasks.records import read_jsonl, write_json

PARAMS = ("fairness",)  # the params.yaml keys this stage reads (dvc.yaml lists the same)
MISSING = "(missing)"  # group value of records that lack the attribute: reported, never gated
EPS = 1e-9  # tolerance on threshold comparisons: 0.1 + 0.2 must not fail a 0.3 gate
PANEL_INCHES = (5.0, 4.0)  # fairness.png: one panel per attribute, side by side
DPI = 100


def _accuracy(y_true, y_pred) -> float:
    """Share of records answered correctly; `y_pred` holds the 0/1 correctness flags."""
    return float(np.mean(y_pred)) if len(y_pred) else float("nan")


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), digits)


def _frame(rows: list[dict], attributes: tuple[str, ...]) -> pd.DataFrame:
    """One row per prediction: correctness flags, answers, label and a column per attribute."""
    if not rows:
        raise ValueError("fairness: predictions.jsonl has no rows")
    missing = {"groups", "student_correct", "teacher_correct"} - set(rows[0])
    if missing:
        raise ValueError(f"fairness: predictions rows lack {sorted(missing)}")
    df = pd.DataFrame(
        {
            "student_correct": [int(bool(r.get("student_correct"))) for r in rows],  # None (unparsed) is wrong
            "teacher_correct": [int(bool(r.get("teacher_correct"))) for r in rows],
            "student_answer": [str(r.get("student_answer")) for r in rows],
            "teacher_answer": [str(r.get("teacher_answer")) for r in rows],
        }
    )
    for attr in attributes:
        values = [(r.get("groups") or {}).get(attr) for r in rows]
        df[attr] = [MISSING if v is None or v == "" else str(v) for v in values]
    return df


def _dp_difference(df: pd.DataFrame, attr: str, model: str, groups: list[str], labels) -> float | None:
    """Largest between-group gap in the rate of predicting any one label (demographic parity)."""
    sub = df[df[attr].isin(groups)]
    if len(groups) < 2 or sub.empty:
        return None
    gaps = []
    for label in labels:
        predicted = (sub[f"{model}_answer"] == str(label)).astype(int)
        mf = MetricFrame(metrics=selection_rate, y_true=predicted, y_pred=predicted, sensitive_features=sub[attr])
        gaps.append(float(mf.difference()))
    return max(gaps)


def _gate(value: float | None, threshold: float, evaluable: bool, what: str, min_group_size: int) -> dict:
    if not evaluable:
        return {"value": None, "threshold": threshold, "passed": True, "status": "not_evaluable",
                "reason": f"{what} not measurable: fewer than 2 groups with n >= {min_group_size}; not gated"}
    passed = value <= threshold + EPS
    return {"value": _round(value), "threshold": threshold, "passed": passed, "status": "passed" if passed else "failed",
            "reason": f"{what} {value:.3f} {'<=' if passed else '>'} {threshold:.3f}"}


def attribute_report(df: pd.DataFrame, attr: str, cfg: Fairness, labels=None) -> dict:
    """Per-group n and accuracies, gaps over gateable groups, amplification and the two gates."""
    per_model = {}
    for model in ("teacher", "student"):
        y = df[f"{model}_correct"]
        per_model[model] = MetricFrame(
            metrics={"accuracy": _accuracy, "n": count}, y_true=y, y_pred=y, sensitive_features=df[attr]
        ).by_group
    groups, raw = {}, {"teacher": {}, "student": {}}
    for group in sorted(per_model["student"].index, key=str):
        for model, accuracy in raw.items():
            accuracy[str(group)] = float(per_model[model].loc[group, "accuracy"])
        n = int(per_model["student"].loc[group, "n"])
        groups[str(group)] = {
            "n": n,
            "teacher_accuracy": _round(raw["teacher"][str(group)]),
            "student_accuracy": _round(raw["student"][str(group)]),
            "too_small": n < cfg.min_group_size,
            "missing_attribute": group == MISSING,
        }
    gateable = [g for g, v in groups.items() if not v["too_small"] and not v["missing_attribute"]]
    evaluable = len(gateable) >= 2
    out = {"groups": groups, "gateable_groups": gateable, "evaluable": evaluable,
           "teacher_gap": None, "student_gap": None, "amplification": None}
    gap = amplification = None
    if evaluable:
        gap = {m: max(raw[m][g] for g in gateable) - min(raw[m][g] for g in gateable) for m in raw}
        amplification = gap["student"] - gap["teacher"]
        out.update(teacher_gap=_round(gap["teacher"]), student_gap=_round(gap["student"]),
                   amplification=_round(amplification))
        out["student_best_group"] = max(gateable, key=raw["student"].get)
        out["student_worst_group"] = min(gateable, key=raw["student"].get)
    out["gates"] = {
        "accuracy_gap": _gate(gap and gap["student"], cfg.max_accuracy_gap, evaluable,
                              f"{attr}: student accuracy gap", cfg.min_group_size),
        "amplification": _gate(amplification, cfg.max_gap_increase, evaluable,
                               f"{attr}: gap amplification (student - teacher)", cfg.min_group_size),
    }
    out["status"] = ("not_evaluable" if not evaluable
                     else "passed" if all(g["passed"] for g in out["gates"].values()) else "failed")
    out["passed"] = out["status"] != "failed"
    if labels:
        for model in ("teacher", "student"):
            out[f"{model}_dp_difference"] = _round(_dp_difference(df, attr, model, gateable, labels))
    return out


def fairness_report(rows: list[dict], attributes: tuple[str, ...], cfg: Fairness, labels=None) -> dict:
    """The whole report for one domain's predictions: pure, no files."""
    df = _frame(rows, attributes)
    attrs = {attr: attribute_report(df, attr, cfg, labels) for attr in attributes}
    failed = [a for a, r in attrs.items() if r["status"] == "failed"]
    return {
        "n": len(df),
        "overall": {"teacher_accuracy": _round(df["teacher_correct"].mean()),
                    "student_accuracy": _round(df["student_correct"].mean())},
        "thresholds": cfg.model_dump(),
        "attributes": attrs,
        "failed": failed,
        "not_evaluable": [a for a, r in attrs.items() if r["status"] == "not_evaluable"],
        "all_passed": not failed,
        "policy": "groups with n < min_group_size and records missing an attribute are reported, never gated; "
                  "an attribute with < 2 gateable groups is not_evaluable: it passes and is listed here",
    }


def flat_metrics(report: dict) -> dict:
    """Flat numbers for `dvc metrics show` and MLflow (null where an attribute is not evaluable)."""
    out = {"student_accuracy": report["overall"]["student_accuracy"],
           "teacher_accuracy": report["overall"]["teacher_accuracy"]}
    for attr, r in report["attributes"].items():
        for key in ("student_gap", "teacher_gap", "amplification"):
            out[f"{attr}_{key}"] = r[key]
    out["gates_passed"] = int(report["all_passed"])
    return out


def plot(report: dict, path: str | Path) -> None:
    """Grouped bars per attribute: teacher vs student accuracy per group; small groups hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attrs = report["attributes"]
    panels = max(1, len(attrs))  # a domain without sensitive attributes still gets a (blank) figure
    fig, axes = plt.subplots(1, panels, figsize=(PANEL_INCHES[0] * panels, PANEL_INCHES[1]), dpi=DPI, squeeze=False)
    for ax, (attr, r) in zip(axes[0], attrs.items()):
        names = list(r["groups"])
        x = np.arange(len(names))
        for offset, model, color in ((-0.2, "teacher", "#9ecae1"), (0.2, "student", "#3182bd")):
            bars = ax.bar(x + offset, [r["groups"][g][f"{model}_accuracy"] or 0 for g in names], 0.4,
                          color=color, label=model, edgecolor="black", linewidth=0.5)
            for bar, g in zip(bars, names):
                if g not in r["gateable_groups"]:
                    bar.set_hatch("//")
                    bar.set_alpha(0.5)
        ax.set_xticks(x, [f"{g}\nn={r['groups'][g]['n']}" + (" (small)" if r["groups"][g]["too_small"] else "")
                          for g in names], fontsize=8)
        if len(names) < 3:
            ax.set_xlim(-1, len(names))  # keep one or two groups from stretching into slabs
        ax.set_ylim(0, 1.15)
        ax.set_ylabel("accuracy")
        if r["evaluable"]:
            title = (f"{attr}: student gap {r['student_gap']:.2f} (teacher {r['teacher_gap']:.2f}, "
                     f"amp {r['amplification']:+.2f})")
        else:
            title = f"{attr}: not evaluable (< 2 groups of n >= {report['thresholds']['min_group_size']})"
        ax.set_title(title, fontsize=9, color={"failed": "red", "passed": "black"}.get(r["status"], "gray"))
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{'all gates passed' if report['all_passed'] else 'gate failed: ' + ', '.join(report['failed'])}"
                 " (hatched: not gated)", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)  # no bbox_inches="tight": the size is exactly figsize x dpi
    plt.close(fig)


def main(domain: str, params: Params, root: Path) -> dict:
    """Read the held-out predictions, write report.json, metrics.json and fairness.png."""
    spec = get_domain(domain)
    rows = read_jsonl(stage_dir(root, domain, "distill") / "predictions.jsonl")
    report = fairness_report(rows, tuple(spec.sensitive_attributes), params.fairness, spec.labels)
    report["domain"] = domain
    out = stage_dir(root, domain, "fairness")
    write_json(out / "report.json", report)
    write_json(out / "metrics.json", flat_metrics(report))
    plot(report, out / "fairness.png")
    return {"all_passed": report["all_passed"], "failed": report["failed"], "not_evaluable": report["not_evaluable"],
            **report["overall"]}
