"""Fairness stage: gaps and amplification computed right, gates fire on bias, small groups never gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domains.base import Domain
from tasks import fairness
from tasks.params import DomainParams, Fairness, FieldMap, Params
from tasks.records import write_jsonl

CFG = Fairness(min_group_size=10, max_accuracy_gap=0.30, max_gap_increase=0.10)


def toy_domain(tmp_path: Path, attributes=("sex", "site"), labels=("yes", "no")) -> Domain:
    templates = tmp_path / "templates"
    templates.mkdir(exist_ok=True)
    (templates / "question.txt").write_text("Note:\n{text}\n\nAnswer one of: {labels}?")
    (templates / "teacher.txt").write_text("{question}\nExplain, then write Answer: <label>.")
    return Domain(
        name="toy", task="say yes or no", labels=labels, sensitive_attributes=attributes,
        fields=FieldMap(text="text", label="label", groups={a: a for a in attributes}),
        generate=lambda n, seed: [], normalize_label=str, parse_answer=lambda t: t.strip() or None,
        recognizers=list, entities=(), templates=templates,
    )


def rows(spec: dict[tuple[str, str], tuple[int, int, int]], other: str = "site") -> list[dict]:
    """Prediction rows: {(attr value for `sex`, value for `other`): (n, teacher right, student right)}."""
    out = []
    for (sex, site), (n, teacher_ok, student_ok) in spec.items():
        for i in range(n):
            out.append({
                "id": f"{sex}-{site}-{i}", "groups": {"sex": sex, other: site}, "label": "yes",
                "teacher_answer": "yes" if i < teacher_ok else "no", "teacher_correct": i < teacher_ok,
                "student_answer": "yes" if i < student_ok else "no", "student_correct": i < student_ok,
            })
    return out


def test_biased_student_fires_both_gates():
    # Teacher 80% on both sexes; student 100% for F, 20% for M: gap 0.8, amplification 0.8.
    report = fairness.fairness_report(rows({("F", "a"): (20, 16, 20), ("M", "a"): (20, 16, 4)}), ("sex",), CFG)
    sex = report["attributes"]["sex"]
    assert sex["teacher_gap"] == pytest.approx(0.0)
    assert sex["student_gap"] == pytest.approx(0.8)
    assert sex["amplification"] == pytest.approx(0.8)
    assert not sex["gates"]["accuracy_gap"]["passed"] and not sex["gates"]["amplification"]["passed"]
    assert "0.800 > 0.300" in sex["gates"]["accuracy_gap"]["reason"]
    assert (sex["student_best_group"], sex["student_worst_group"]) == ("F", "M")
    assert report["failed"] == ["sex"] and report["all_passed"] is False
    assert fairness.flat_metrics(report)["gates_passed"] == 0


def test_fair_student_passes():
    report = fairness.fairness_report(rows({("F", "a"): (20, 16, 15), ("M", "a"): (20, 15, 14)}), ("sex",), CFG)
    sex = report["attributes"]["sex"]
    assert sex["status"] == "passed" and report["all_passed"] and report["failed"] == []
    assert report["overall"] == {"teacher_accuracy": pytest.approx(31 / 40), "student_accuracy": pytest.approx(29 / 40)}


def test_amplification_is_student_gap_minus_teacher_gap():
    # Teacher: F 0.9, M 0.6 (gap 0.3); student: F 0.8, M 0.6 (gap 0.2): amplification -0.1 (narrowed).
    report = fairness.fairness_report(rows({("F", "a"): (10, 9, 8), ("M", "a"): (10, 6, 6)}), ("sex",), CFG)
    sex = report["attributes"]["sex"]
    assert sex["teacher_gap"] == pytest.approx(0.3)
    assert sex["student_gap"] == pytest.approx(0.2)
    assert sex["amplification"] == pytest.approx(-0.1)
    assert sex["gates"]["amplification"]["passed"]
    # Exactly at both thresholds passes: float error (1.0 - 0.7 = 0.30000000000000004) must not fail.
    edge = fairness.fairness_report(rows({("F", "a"): (10, 10, 10), ("M", "a"): (10, 8, 7)}), ("sex",), CFG)
    assert edge["attributes"]["sex"]["student_gap"] == pytest.approx(0.3)
    assert edge["attributes"]["sex"]["amplification"] == pytest.approx(0.1)
    assert edge["attributes"]["sex"]["status"] == "passed"


def test_small_groups_are_reported_but_never_gated():
    # `tiny` (n=3) is all wrong for the student, but below min_group_size: no gate fires.
    data = rows({("F", "a"): (20, 16, 16), ("M", "a"): (20, 16, 16), ("X", "a"): (3, 3, 0)})
    report = fairness.fairness_report(data, ("sex",), CFG)
    sex = report["attributes"]["sex"]
    assert sex["groups"]["X"] == {"n": 3, "teacher_accuracy": 1.0, "student_accuracy": 0.0,
                                  "too_small": True, "missing_attribute": False}
    assert sex["gateable_groups"] == ["F", "M"]
    assert sex["student_gap"] == pytest.approx(0.0) and report["all_passed"]


def test_attribute_with_one_gateable_group_is_not_evaluable_and_listed():
    # site: one big group and one tiny one; records without `site` go to "(missing)", never gated.
    data = rows({("F", "a"): (20, 20, 20), ("M", "a"): (15, 15, 15), ("M", "b"): (5, 5, 5)})
    for r in data[:12]:
        del r["groups"]["site"]
    report = fairness.fairness_report(data, ("sex", "site"), CFG)
    site = report["attributes"]["site"]
    assert site["status"] == "not_evaluable" and site["student_gap"] is None
    assert site["groups"]["(missing)"]["missing_attribute"] and site["groups"]["b"]["too_small"]
    assert report["not_evaluable"] == ["site"] and report["all_passed"]
    assert all(g["status"] == "not_evaluable" and "not gated" in g["reason"] for g in site["gates"].values())
    assert fairness.flat_metrics(report)["site_student_gap"] is None


def test_demographic_parity_difference_for_classification():
    # Student says "yes" for every F and for 4 of 20 M: selection-rate gap 0.8 on label "yes".
    data = rows({("F", "a"): (20, 16, 20), ("M", "a"): (20, 16, 4)})
    report = fairness.fairness_report(data, ("sex",), CFG, labels=("yes", "no"))
    assert report["attributes"]["sex"]["student_dp_difference"] == pytest.approx(0.8)
    assert report["attributes"]["sex"]["teacher_dp_difference"] == pytest.approx(0.0)
    assert "student_dp_difference" not in fairness.fairness_report(data, ("sex",), CFG)["attributes"]["sex"]


def test_main_writes_report_metrics_and_png(tmp_path: Path, monkeypatch):
    import matplotlib.image

    spec = toy_domain(tmp_path)
    monkeypatch.setattr(fairness, "get_domain", lambda name: spec)
    data = rows({("F", "a"): (20, 16, 20), ("M", "a"): (20, 16, 4), ("M", "b"): (4, 2, 2)})
    write_jsonl(tmp_path / "data/toy/distill/predictions.jsonl", data)
    params = Params(domains={"toy": DomainParams()}, fairness=CFG)

    summary = fairness.main("toy", params, tmp_path)

    out = tmp_path / "data/toy/fairness"
    assert sorted(p.name for p in out.iterdir()) == ["fairness.png", "metrics.json", "report.json"]
    assert summary["all_passed"] is False and summary["failed"] == ["sex"]
    report = json.loads((out / "report.json").read_text())
    assert report["domain"] == "toy" and set(report["attributes"]) == {"sex", "site"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"student_accuracy", "teacher_accuracy", "gates_passed"} | {
        f"{a}_{k}" for a in ("sex", "site") for k in ("student_gap", "teacher_gap", "amplification")}
    # sex: F teacher 16/20, student 20/20; M (both sites) teacher 18/24, student 6/24.
    assert metrics["sex_teacher_gap"] == pytest.approx(0.05) and metrics["sex_student_gap"] == pytest.approx(0.75)
    assert metrics["gates_passed"] == 0 and metrics["sex_amplification"] == pytest.approx(0.7)
    assert metrics["site_student_gap"] is None  # site b has 4 records: one gateable group
    png = out / "fairness.png"
    assert png.stat().st_size > 10_000
    image = matplotlib.image.imread(png)
    w, h = fairness.PANEL_INCHES
    assert image.shape == (int(h * fairness.DPI), int(w * fairness.DPI) * 2, 4)  # two attributes side by side
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_empty_predictions_are_an_error(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(fairness, "get_domain", lambda name: toy_domain(tmp_path))
    write_jsonl(tmp_path / "data/toy/distill/predictions.jsonl", [])
    with pytest.raises(ValueError, match="no rows"):
        fairness.main("toy", Params(domains={"toy": DomainParams()}), tmp_path)
