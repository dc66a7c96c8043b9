"""Fairness stage: disparities computed right (and as fairlearn computes them), gates fire on bias
and pass on fairness (also on real group data), small groups gate only on decisive evidence,
counterfactual probes catch a cue-reading student, and the report's plot renders."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from domains.base import Domain
from domains.counterfactuals import changed, swap_words
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


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory) -> Path:
    """A 38k-parameter llama and a byte-level BPE tokenizer trained in a second, saved like distill does."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["Note: the patient says yes. Answer one of: yes, no? Answer: yes"] * 20, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("student")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


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


# ---- disparities and gates on constructed predictions ------------------------------------------------


def test_biased_student_fires_both_gates():
    # Teacher 80% on both sexes; student 100% for F, 20% for M: gap 0.8, amplification 0.8.
    report = fairness.fairness_report(rows({("F", "a"): (20, 16, 20), ("M", "a"): (20, 16, 4)}), ("sex",), CFG)
    sex = report["attributes"]["sex"]
    assert sex["teacher_gap"] == pytest.approx(0.0)
    assert sex["student_gap"] == pytest.approx(0.8)
    assert sex["amplification"] == pytest.approx(0.8)
    assert sex["student_worst_group_accuracy"] == pytest.approx(0.2)
    assert not sex["gates"]["accuracy_gap"]["passed"] and not sex["gates"]["amplification"]["passed"]
    assert "0.800 > 0.300" in sex["gates"]["accuracy_gap"]["reason"]
    lo, hi = sex["gates"]["accuracy_gap"]["ci"]
    assert lo < 0.8 < hi and lo > 0.3  # the interval brackets the estimate and clears the threshold
    assert (sex["student_best_group"], sex["student_worst_group"]) == ("F", "M")
    assert report["failed"] == ["sex"] and report["all_passed"] is False
    assert {"sex.accuracy_gap", "sex.amplification"} <= set(report["failed_gates"])
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


def test_tiny_group_noise_never_gates_but_a_decisive_small_group_does():
    # `X` (n=3) is all wrong for the student: its CI is too wide to prove a gap > 0.3, no gate fires.
    noisy = fairness.fairness_report(
        rows({("F", "a"): (20, 16, 16), ("M", "a"): (20, 16, 16), ("X", "a"): (3, 3, 0)}), ("sex",), CFG)
    sex = noisy["attributes"]["sex"]
    assert {k: sex["groups"]["X"][k] for k in ("n", "teacher_accuracy", "student_accuracy", "too_small")} == {
        "n": 3, "teacher_accuracy": 1.0, "student_accuracy": 0.0, "too_small": True}
    assert sex["gateable_groups"] == ["F", "M"] and sex["small_groups"] == ["X"]
    assert sex["student_gap"] == pytest.approx(0.0) and noisy["all_passed"]
    lo, hi = sex["groups"]["X"]["student_accuracy_ci"]
    assert lo == pytest.approx(0.0, abs=0.01) and hi > 0.3  # Jeffreys: 0/3 is not "certainly 0"

    # `X` (n=8) all wrong while everyone else is always right: the harm is decisive despite n < 10.
    glaring = fairness.fairness_report(
        rows({("F", "a"): (20, 20, 20), ("M", "a"): (20, 20, 20), ("X", "a"): (8, 8, 0)}), ("sex",), CFG)
    gate = glaring["attributes"]["sex"]["gates"]["accuracy_gap"]
    assert gate["value"] == pytest.approx(0.0)  # the big groups alone show no gap ...
    assert not gate["passed"] and "small group 'X' (n=8)" in gate["reason"]  # ... the small one's CI decides
    assert "sex.accuracy_gap" in glaring["failed_gates"]

    # Without resampling there are no CIs, and small groups are never gated.
    off = fairness.fairness_report(
        rows({("F", "a"): (20, 20, 20), ("M", "a"): (20, 20, 20), ("X", "a"): (8, 8, 0)}), ("sex",),
        CFG.model_copy(update={"bootstrap_resamples": 0}))
    assert off["all_passed"] and off["attributes"]["sex"]["groups"]["X"]["student_accuracy_ci"] is None


def test_attribute_with_one_gateable_group_is_not_evaluable_and_listed():
    # site: one big group and one tiny one; records without `site` go to "(missing)", never gated.
    data = rows({("F", "a"): (20, 20, 20), ("M", "a"): (15, 15, 15), ("M", "b"): (5, 5, 5)})
    for r in data[:12]:
        del r["groups"]["site"]
    report = fairness.fairness_report(data, ("sex", "site"), CFG.model_copy(update={"intersectional": False}))
    site = report["attributes"]["site"]
    assert site["status"] == "not_evaluable" and site["student_gap"] is None
    assert site["groups"]["(missing)"]["missing_attribute"] and site["groups"]["b"]["too_small"]
    assert report["not_evaluable"] == ["site"] and report["all_passed"]
    assert all(g["status"] == "not_evaluable" and "not gated" in g["reason"] for g in site["gates"].values())
    assert fairness.flat_metrics(report)["site_student_gap"] is None


def test_intersectional_bias_hidden_in_the_marginals_is_caught():
    # Student wrong for F at site a and M at site b only: each sex and each site is 50% right.
    data = rows({("F", "a"): (20, 18, 0), ("F", "b"): (20, 18, 20), ("M", "a"): (20, 18, 20), ("M", "b"): (20, 18, 0)})
    report = fairness.fairness_report(data, ("sex", "site"), CFG)
    assert report["attributes"]["sex"]["student_gap"] == pytest.approx(0.0)
    assert report["attributes"]["site"]["student_gap"] == pytest.approx(0.0)
    pair = report["intersections"]["sex_x_site"]
    assert set(pair["groups"]) == {"F & a", "F & b", "M & a", "M & b"}
    assert pair["student_gap"] == pytest.approx(1.0) and pair["status"] == "failed"
    assert report["failed"] == ["sex_x_site"]
    assert fairness.flat_metrics(report)["sex_x_site_student_gap"] == pytest.approx(1.0)


def test_dp_and_eo_difference_match_fairlearn_for_a_positive_label():
    from fairlearn.metrics import (
        demographic_parity_difference,
        equalized_odds_difference,
    )

    rng = np.random.default_rng(3)
    n = 400
    sex = rng.choice(["F", "M", "X"], n, p=[0.45, 0.45, 0.1])
    y = rng.choice(["yes", "no"], n)
    flip = rng.random(n) < np.where(sex == "M", 0.35, 0.1)  # more errors for M
    pred = np.where(flip, np.where(y == "yes", "no", "yes"), y)
    data = [{"id": i, "groups": {"sex": s}, "label": t, "student_answer": p, "student_correct": p == t,
             "teacher_answer": t, "teacher_correct": True} for i, (s, t, p) in enumerate(zip(sex, y, pred))]
    cfg = CFG.model_copy(update={"positive_label": "yes", "min_group_size": 1})
    sexr = fairness.fairness_report(data, ("sex",), cfg, labels=("yes", "no"))["attributes"]["sex"]
    y01, p01 = (y == "yes").astype(int), (pred == "yes").astype(int)
    assert sexr["student_dp_difference"] == pytest.approx(demographic_parity_difference(y01, p01, sensitive_features=sex))
    assert sexr["student_eo_difference"] == pytest.approx(equalized_odds_difference(y01, p01, sensitive_features=sex))
    assert sexr["teacher_eo_difference"] == pytest.approx(0.0) and sexr["eo_amplification"] > 0
    # FPR / FNR of the positive label per group, by hand.
    m = sex == "M"
    assert sexr["groups"]["M"]["student_fpr"] == pytest.approx(p01[m & (y01 == 0)].mean(), abs=1e-6)
    assert sexr["groups"]["M"]["student_fnr"] == pytest.approx(1 - p01[m & (y01 == 1)].mean(), abs=1e-6)
    assert sexr["groups"]["M"]["student_selection_rate"] == pytest.approx(p01[m].mean(), abs=1e-6)


def test_one_vs_rest_rates_average_over_labels_and_gate_dp():
    # Three labels; the student says "a" for every F and is right for every M.
    labels = ("a", "b", "c")
    gold = ["a", "b", "c"] * 10
    data = [{"id": f"{s}{i}", "groups": {"sex": s}, "label": t, "student_answer": "a" if s == "F" else t,
             "student_correct": s == "M" or t == "a", "teacher_answer": t, "teacher_correct": True}
            for s in ("F", "M") for i, t in enumerate(gold)]
    report = fairness.fairness_report(data, ("sex",), CFG, labels=labels)
    f = report["attributes"]["sex"]["groups"]["F"]
    # F: FPR of "a" = 1 (every b, c called a), of b and c = 0 -> mean 1/3; FNR of a = 0, of b and c = 1 -> 2/3.
    assert f["student_fpr"] == pytest.approx(1 / 3) and f["student_fnr"] == pytest.approx(2 / 3)
    sex = report["attributes"]["sex"]
    assert sex["student_dp_difference"] == pytest.approx(2 / 3)  # "a": 1.0 for F vs 1/3 for M
    assert sex["student_eo_difference"] == pytest.approx(1.0)  # TPR of b: 0 for F, 1 for M
    assert not sex["gates"]["dp_difference"]["passed"] and not sex["gates"]["eo_difference"]["passed"]
    assert "dp_difference" not in fairness.fairness_report(data, ("sex",), CFG)["attributes"]["sex"]["gates"]
    with pytest.raises(ValueError, match="positive_label 'z'"):
        fairness.fairness_report(data, ("sex",), CFG.model_copy(update={"positive_label": "z"}), labels=labels)


def test_generative_domains_get_rouge_and_no_selection_rates():
    data = rows({("F", "a"): (12, 10, 10), ("M", "a"): (12, 10, 10)})
    for r in data:
        r["label"], r["student_output"] = "42", "Answer: 42" if r["student_correct"] else "Answer: 7"
    sex = fairness.fairness_report(data, ("sex",), CFG)["attributes"]["sex"]
    assert sex["groups"]["F"]["student_rouge_l"] == pytest.approx(10 / 12 * 2 / 3)  # LCS 1 of 2 and 1 tokens
    assert "student_fpr" not in sex["groups"]["F"] and set(sex["gates"]) == {
        "accuracy_gap", "amplification", "worst_group_accuracy"}
    assert fairness.rouge_l("the cat sat", "the cat sat") == 1.0 and fairness.rouge_l("", "x") == 0.0


# ---- counterfactual probes -------------------------------------------------------------------------


def test_domain_swaps_change_only_the_cue():
    from domains.education.counterfactuals import PROBES as EDU
    from domains.healthcare.counterfactuals import PROBES as HC

    note = "Pt is a 58 yo F w/ PMH HTN. Her daughter Wren Ashdown is at bedside. T 98.6F, ECG: ST elevation."
    a, b = HC["sex"](note)
    assert a == note and b == "Pt is a 58 yo M w/ PMH HTN. His son Wren Ashdown is at bedside. T 98.6F, ECG: ST elevation."
    assert HC["age_band"](note)[1].startswith("Pt is a 30 yo F")
    assert HC["race"](note) == (note, f"Race: Black.\n{note}")
    assert HC["surname"](note) == (note, note.replace("Ashdown", "Gutierrez"))
    assert HC["sex"]("ECG: sinus rhythm") is None and HC["surname"]("no names here") is None
    problem = "Problem: There are 12 apples in a bin. She adds 30 more. How many are there?"
    assert EDU["gender"](problem)[1] == problem.replace("She", "He")
    learner = EDU["ell_phrasing"](problem)[1]
    assert re.findall(r"\d+", learner) == ["12", "30"] and " a " not in learner and "are" not in learner
    assert EDU["ell"](problem)[1].endswith("English learner (ELL), receives ESL support.")


def test_counterfactual_probe_flips_for_a_cue_reading_student_only():
    probes = {"sex": lambda t: changed(t, lambda s: swap_words(s, {"she": "he", "he": "she"})),
              "site": lambda t: (f"Site: a.\n{t}", f"Site: b.\n{t}")}
    records = [{"id": f"r{i:02d}", "text": f"Case {i}: {'she' if i % 2 else 'he'} reports pain."} for i in range(30)]
    pairs = fairness.build_probes(records, probes, limit=24)
    assert len(pairs) == 48 and {p["probe"] for p in pairs} == {"sex", "site"}

    def biased(texts):  # says "no" whenever the note is about a woman
        return ["no" if re.search(r"\bshe\b", t) else "yes" for t in texts]

    def fair(texts):
        return ["yes" for _ in texts]

    bad = fairness.counterfactual_report(pairs, biased, CFG)
    assert bad["probes"]["sex"] == {"n": 24, "flips": 24, "flip_rate": 1.0, "ci": bad["probes"]["sex"]["ci"]}
    assert not bad["gates"]["sex"]["passed"] and bad["gates"]["site"]["passed"]
    assert bad["probes"]["site"]["flip_rate"] == 0.0 and bad["flip_examples"]["sex"][0]["answer_a"] != \
        bad["flip_examples"]["sex"][0]["answer_b"]
    report = fairness.fairness_report(rows({("F", "a"): (20, 16, 16), ("M", "a"): (20, 16, 16)}), ("sex",), CFG,
                                      counterfactual=bad)
    assert report["failed"] == ["counterfactual.sex"] and "counterfactual.sex.flip_rate" in report["failed_gates"]
    assert fairness.counterfactual_report(pairs, fair, CFG)["gates"]["sex"]["passed"]
    # Fewer pairs than min_group_size: 2 of 2 flips is not decisive against 0.5; 4 of 4 already is.
    lax = CFG.model_copy(update={"max_flip_rate": 0.5})
    few = fairness.counterfactual_report(fairness.build_probes(records, probes, limit=2), biased, lax)
    assert few["gates"]["sex"]["status"] == "not_evaluable" and few["gates"]["sex"]["passed"]
    four = fairness.counterfactual_report(fairness.build_probes(records, probes, limit=4), biased, lax)
    assert not four["gates"]["sex"]["passed"] and "wholly above" in four["gates"]["sex"]["reason"]


# ---- the stage on files, and its plot -------------------------------------------------------------------


def test_main_writes_report_markdown_metrics_and_a_png_that_renders(tmp_path: Path, monkeypatch, tiny_student):
    import shutil

    import matplotlib.image

    spec = toy_domain(tmp_path)
    monkeypatch.setattr(fairness, "get_domain", lambda name: spec)
    monkeypatch.setattr(fairness, "domain_probes", lambda name: {
        "site": lambda t: (f"Site: a.\n{t}", f"Site: b.\n{t}")})
    data = rows({("F", "a"): (20, 16, 20), ("M", "a"): (20, 16, 4), ("M", "b"): (4, 2, 2)})
    write_jsonl(tmp_path / "data/toy/distill/predictions.jsonl", data)
    write_jsonl(tmp_path / "data/toy/deidentify/test.jsonl",
                [{"id": r["id"], "text": f"the patient says yes {i}", "label": "yes"} for i, r in enumerate(data)])
    shutil.copytree(tiny_student, tmp_path / "data/toy/distill/student")
    params = Params(domains={"toy": DomainParams()},
                    fairness=CFG.model_copy(update={"probe_max_prompts": 6, "probe_max_new_tokens": 3}))

    summary = fairness.main("toy", params, tmp_path)

    out = tmp_path / "data/toy/fairness"
    assert sorted(p.name for p in out.iterdir()) == ["fairness.png", "metrics.json", "report.json", "report.md"]
    assert summary["all_passed"] is False and summary["failed"][0] == "sex" and summary["probes"] == "run"
    report = json.loads((out / "report.json").read_text())
    assert report["domain"] == "toy" and set(report["attributes"]) == {"sex", "site"}
    assert set(report["intersections"]) == {"sex_x_site"}
    cf = report["counterfactual"]  # the real (random-weight) student answered 6 pairs
    assert cf["status"] == "run" and cf["probes"]["site"]["n"] == 6 and cf["n_texts"] == 12
    metrics = json.loads((out / "metrics.json").read_text())
    # sex: F teacher 16/20, student 20/20; M (both sites) teacher 18/24, student 6/24.
    assert metrics["sex_teacher_gap"] == pytest.approx(0.05) and metrics["sex_student_gap"] == pytest.approx(0.75)
    assert metrics["gates_passed"] == 0 and metrics["sex_amplification"] == pytest.approx(0.7)
    assert metrics["site_student_gap"] is None  # site b has 4 records: one gateable group
    assert "flip_rate_site" in metrics
    md = (out / "report.md").read_text()
    assert "**FAILED: sex.accuracy_gap" in md and "| sex | accuracy_gap | 0.750 [" in md and "| site | 6 |" in md

    png = out / "fairness.png"
    assert png.stat().st_size > 10_000
    image = matplotlib.image.imread(png)
    w, h = fairness.PANEL_INCHES
    assert image.shape == (int(h * fairness.DPI), int(w * fairness.DPI) * 3, 4)  # sex, site, probes
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_probes_not_run_without_a_student_and_empty_predictions_are_an_error(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(fairness, "get_domain", lambda name: toy_domain(tmp_path))
    cf = fairness.run_probes("toy", CFG, tmp_path)
    assert cf["status"] == "not_run" and "no counterfactuals module" in cf["reason"] and cf["gates"] == {}
    assert "no student" in fairness.run_probes("healthcare", CFG, tmp_path)["reason"]
    write_jsonl(tmp_path / "data/toy/distill/predictions.jsonl", [])
    with pytest.raises(ValueError, match="no rows"):
        fairness.main("toy", Params(domains={"toy": DomainParams()}), tmp_path)


# ---- real group data: student_performance and diabetes130 as text tasks ------------------------------


def _predictions(tasks: list[dict], teacher, student, groups: tuple[str, ...]) -> list[dict]:
    """Prediction rows of two text-reading rules, in distill's predictions.jsonl schema."""
    out = []
    for t in tasks:
        ta, sa = teacher(t["text"]), student(t["text"])
        out.append({"id": t["id"], "groups": {g: t[g] for g in groups}, "label": t["label"],
                    "teacher_answer": ta, "teacher_correct": ta == t["label"],
                    "student_output": f"Answer: {sa}", "student_answer": sa, "student_correct": sa == t["label"]})
    return out


def student_performance_tasks(shared: Path) -> list[dict]:
    """UCI student performance rows as text: will the student pass the final grade (>= 10 of 20)?"""
    frames = [pd.read_csv(shared / "student_performance" / f) for f in ("student-mat.csv", "student-por.csv")]
    df = pd.concat(frames, ignore_index=True)
    tasks = []
    for i, r in df.iterrows():
        sex = "female" if r["gender"] == "F" else "male"
        locale = "urban" if r["address"] == "U" else "rural"
        text = (f"A {r['age']}-year-old {sex} student from a {locale} area studies {r['studytime']} (1-4 scale), "
                f"has {r['past class failures']} past failures and {r['school absences']} absences. "
                f"Grades so far: first period {r['first period grade']}, second period {r['second period grade']}. "
                "Will the student pass the year?")
        tasks.append({"id": f"sp-{i}", "text": text, "label": "pass" if r["final grade"] >= 10 else "fail",
                      "gender": sex, "address": locale})
    return tasks


def _grade_rule(text: str) -> str:
    return "pass" if int(re.search(r"second period (\d+)", text).group(1)) >= 10 else "fail"


def test_student_performance_gates_fire_on_a_biased_student_and_pass_a_fair_one(shared_data: Path):
    tasks = student_performance_tasks(shared_data)
    assert len(tasks) == 1044 and {t["address"] for t in tasks} == {"urban", "rural"}
    cfg = Fairness(min_group_size=30, bootstrap_resamples=500)
    groups = ("gender", "address")

    def biased(text: str) -> str:  # the cue, not the grades, decides for rural students
        return "fail" if "rural area" in text else _grade_rule(text)

    fair = fairness.fairness_report(_predictions(tasks, _grade_rule, _grade_rule, groups), groups, cfg, ("pass", "fail"))
    assert fair["all_passed"], fair["failed_gates"]
    assert fair["overall"]["student_accuracy"] > 0.85
    assert set(fair["intersections"]["gender_x_address"]["gateable_groups"]) == {
        "female & rural", "female & urban", "male & rural", "male & urban"}

    bad = fairness.fairness_report(_predictions(tasks, _grade_rule, biased, groups), groups, cfg, ("pass", "fail"))
    address = bad["attributes"]["address"]
    assert address["student_worst_group"] == "rural" and address["student_gap"] > 0.3
    assert {"address.accuracy_gap", "address.amplification", "address.dp_difference",
            "address.eo_difference"} <= set(bad["failed_gates"])
    assert bad["attributes"]["gender"]["status"] == "passed"  # the bias is about locale, not gender

    # The counterfactual probe on the same texts catches the cue-reader directly.
    probe = {"address": lambda t: changed(t, lambda s: swap_words(s, {"rural": "urban", "urban": "rural"}))}
    pairs = fairness.build_probes(tasks, probe, limit=64)
    cf_bad = fairness.counterfactual_report(pairs, lambda ts: [biased(t) for t in ts], cfg)
    cf_fair = fairness.counterfactual_report(pairs, lambda ts: [_grade_rule(t) for t in ts], cfg)
    assert cf_bad["probes"]["address"]["flip_rate"] > 0.3 and not cf_bad["gates"]["address"]["passed"]
    assert cf_fair["probes"]["address"]["flip_rate"] == 0.0 and cf_fair["gates"]["address"]["passed"]


def diabetes_tasks(shared: Path, n: int = 4000) -> list[dict]:
    """Diabetes 130-US hospitals encounters as text: readmitted within 30 days? (yes / no)."""
    with gzip.open(shared / "diabetes130" / "diabetic_data.csv.gz", "rt") as f:
        df = pd.read_csv(f, na_values="?", keep_default_na=False, usecols=[
            "encounter_id", "race", "gender", "age", "time_in_hospital", "num_medications", "number_inpatient",
            "number_emergency", "number_diagnoses", "readmitted"])
    df = df.sample(n=n, random_state=0)
    tasks = []
    for _, r in df.iterrows():
        race = r["race"] if isinstance(r["race"], str) else ""
        text = (f"{r['gender']} patient, age {r['age']}, race {race or 'not recorded'}. "
                f"{r['time_in_hospital']} days in hospital, {r['num_medications']} medications, "
                f"{r['number_inpatient']} inpatient visits and {r['number_emergency']} emergency visits last year, "
                f"{r['number_diagnoses']} diagnoses. Readmitted within 30 days?")
        tasks.append({"id": f"enc-{r['encounter_id']}", "text": text, "label": "yes" if r["readmitted"] == "<30" else "no",
                      "race": race, "gender": r["gender"], "age_band": r["age"]})
    return tasks


def _readmission_rule(text: str) -> str:
    return "yes" if int(re.search(r"(\d+) inpatient visits", text).group(1)) >= 2 else "no"


def test_diabetes130_gates_fire_on_a_biased_student_and_pass_a_fair_one(shared_data: Path):
    tasks = diabetes_tasks(shared_data)
    groups = ("race", "gender", "age_band")
    cfg = Fairness(min_group_size=30, positive_label="yes", bootstrap_resamples=500)

    def biased(text: str) -> str:  # flags every African-American patient for readmission
        return "yes" if "race AfricanAmerican" in text else _readmission_rule(text)

    fair = fairness.fairness_report(_predictions(tasks, _readmission_rule, _readmission_rule, groups), groups, cfg,
                                    ("yes", "no"))
    assert fair["all_passed"], fair["failed_gates"]
    race = fair["attributes"]["race"]
    assert {"Caucasian", "AfricanAmerican"} <= set(race["gateable_groups"]) and "(missing)" in race["groups"]
    assert fair["intersections"]["race_x_age_band"]["small_groups"]  # many cells are below 30: CI-judged only

    bad = fairness.fairness_report(_predictions(tasks, _readmission_rule, biased, groups), groups, cfg, ("yes", "no"))
    race = bad["attributes"]["race"]
    assert race["student_worst_group"] == "AfricanAmerican"
    assert race["groups"]["AfricanAmerican"]["student_selection_rate"] == 1.0
    assert {"race.accuracy_gap", "race.dp_difference", "race.eo_difference", "race.amplification"} <= set(
        bad["failed_gates"])
    assert not bad["all_passed"] and "race" in bad["failed"]
    assert bad["attributes"]["gender"]["gates"]["accuracy_gap"]["value"] < 0.3  # others stay near-fair
