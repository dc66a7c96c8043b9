"""Teacher rationale synthesis: the row transform dict-in/dict-out, the stage end to end on the
tiny teacher, and resuming: a killed or truncated run loses no finished batch and regenerates
nothing that was finished; a rerun of a finished synthesis generates nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TINY_TEACHER


from domains import get_domain
from tasks import models
from tasks import synthesize as syn
from tasks.params import Params, Synthesize
from tasks.records import read_jsonl, write_jsonl

HEALTH = get_domain("healthcare")
EDU = get_domain("education")


def record(label: str, text: str = "de-identified text", split: str = "train") -> dict:
    return {"id": "healthcare-000001", "text": text, "label": label, "groups": {"sex": "F"}, "split": split}


# ---------------------------------------------------------------------------------------------
# (a) the row transform, dict in, dict out


@pytest.mark.parametrize(
    "domain, label, output, answer, rationale",
    [
        # correct answer after "Answer:": kept, rationale is the text before it
        (HEALTH, "cardiac", "Crushing chest pain and raised troponin point to the heart.\nAnswer: cardiac",
         "cardiac", "Crushing chest pain and raised troponin point to the heart."),
        # a synonym after the marker, markdown around it
        (HEALTH, "respiratory", "Wheezing and low oxygen saturation.\n**Answer:** Pulmonary",
         "respiratory", "Wheezing and low oxygen saturation."),
        (HEALTH, "neurological", "Sudden facial droop and slurred speech.\nFinal Answer: neurological",
         "neurological", "Sudden facial droop and slurred speech."),
        # no "Answer:" line but the label word present: parsed from the text, all of it is rationale
        (HEALTH, "gastrointestinal", "Epigastric pain after meals suggests a gastrointestinal cause.",
         "gastrointestinal", "Epigastric pain after meals suggests a gastrointestinal cause."),
        (EDU, "12", "Maya buys 3 packs of 4 pencils, so 3 * 4 = 12.\nAnswer: 12",
         "12", "Maya buys 3 packs of 4 pencils, so 3 * 4 = 12."),
        (EDU, "1200", "Each of 4 classes raises 300 dollars; 4 * 300.\nAnswer: 1,200", "1200",
         "Each of 4 classes raises 300 dollars; 4 * 300."),
        (EDU, "12", "Answer: 12.0 pencils", "12", None),  # correct, but nothing before the answer
        (EDU, "7", "He had 10 marbles and gave away 3, so 7 are left.", "7",
         "He had 10 marbles and gave away 3, so 7 are left."),
    ],
)
def test_correct_answer_keeps_the_rationale(domain, label, output, answer, rationale):
    rec = record(label)
    row = syn.format_output(domain, rec, output, "train")
    assert row == {**rec, "teacher_output": output, "teacher_answer": answer, "rationale": rationale,
                   "kept": rationale is not None}
    assert syn.outcome(domain, row) == ("kept" if rationale else "no_rationale")
    test_rec = record(label, split="test")
    assert syn.format_output(domain, test_rec, output, "test") == {
        **test_rec, "teacher_output": output, "teacher_answer": answer, "rationale": rationale, "correct": True}


@pytest.mark.parametrize(
    "domain, label, output, answer",
    [
        (HEALTH, "cardiac", "Productive cough and fever for three days.\nAnswer: respiratory", "respiratory"),
        # the last category word wins when there is no marker
        (HEALTH, "cardiac", "Not cardiac: the pain is pleuritic, so respiratory.", "respiratory"),
        (EDU, "12", "3 packs of 4 pencils is 3 + 4 = 7.\nAnswer: 7", "7"),
        (EDU, "12", "Adding the numbers gives 13", "13"),
    ],
)
def test_wrong_answer_drops_the_rationale(domain, label, output, answer):
    row = syn.format_output(domain, record(label), output)
    assert (row["teacher_answer"], row["rationale"], row["kept"]) == (answer, None, False)
    assert syn.outcome(domain, row) == "wrong_answer"
    assert syn.format_output(domain, record(label, split="test"), output, "test")["correct"] is False


@pytest.mark.parametrize(
    "domain, output",
    [
        (HEALTH, "The patient should follow up with the clinic next week."),
        (HEALTH, "Answer: unclear"),
        (HEALTH, ""),
        (EDU, "I cannot tell from the record.\nAnswer: none"),
        (EDU, ""),
    ],
)
def test_unparseable_output_is_a_counted_row(domain, output):
    row = syn.format_output(domain, record("cardiac" if domain is HEALTH else "5"), output)
    assert (row["teacher_answer"], row["rationale"], row["kept"]) == (None, None, False)
    assert syn.outcome(domain, row) == "unparseable"


def test_a_copy_of_the_prompt_is_no_rationale():
    """Small teachers echo the record or the instruction and land on the label by accident."""
    rec = record("12", text="Maya buys 3 packs of 4 pencils. How many pencils does she have?")
    instruction = EDU.teacher_prompt(rec).splitlines()[-1].split("Answer:")[0]
    for output in (rec["text"] + "\nAnswer: 12", instruction + "Answer: 12"):
        row = syn.format_output(EDU, rec, output)
        assert (row["teacher_answer"], row["rationale"], row["kept"]) == ("12", None, False), output
        assert syn.outcome(EDU, row) == "no_rationale"


def test_gold_label_is_compared_in_canonical_form():
    assert syn.format_output(EDU, record("12.0"), "3 * 4.\nAnswer: 12")["kept"]
    assert syn.format_output(EDU, {**record("x"), "label": 12}, "3 * 4.\nAnswer: 12")["kept"]


def test_split_report_counts_add_up():
    rows = [
        syn.format_output(HEALTH, record("cardiac"), "Chest pain.\nAnswer: cardiac"),
        syn.format_output(HEALTH, record("cardiac"), "Cough.\nAnswer: respiratory"),
        syn.format_output(HEALTH, record("cardiac"), "no idea"),
        syn.format_output(HEALTH, record("cardiac"), "Answer: cardiac"),
    ]
    results = [{"prompt_tokens": 10, "completion_tokens": 5, "seconds": 0.5}] * 4
    report = syn.split_report(HEALTH, rows, results)
    assert {k: report[k] for k in ("records", *syn.OUTCOMES)} == {
        "records": 4, "kept": 1, "wrong_answer": 1, "unparseable": 1, "no_rationale": 1}
    assert report["teacher_accuracy"] == 0.5 and report["completion_tokens_per_s"] == 10.0


def test_cache_key_changes_with_teacher_templates_and_settings():
    settings = syn.generation_settings(Synthesize())
    base = syn.cache_key("t", "fp", "tpl", settings)
    assert base == syn.cache_key("t", "fp", "tpl", dict(settings))
    assert base != syn.cache_key("u", "fp", "tpl", settings)
    assert base != syn.cache_key("t", "fp2", "tpl", settings)
    assert base != syn.cache_key("t", "fp", "tpl2", settings)
    assert base != syn.cache_key("t", "fp", "tpl", {**settings, "max_new_tokens": 1})
    assert syn.templates_hash(HEALTH) != syn.templates_hash(EDU)


def test_cache_skips_a_truncated_last_line_and_appends_cleanly(tmp_path):
    cache = syn.ResultCache(tmp_path / "c.jsonl")
    entry = {"id": "a", "prompt_hash": "h", "text": "t", "prompt_tokens": 1, "completion_tokens": 1, "seconds": 0.1}
    cache.append([entry, {**entry, "id": "b"}])
    with open(cache.path, "a") as f:
        f.write('{"id": "c", "prompt_hash": "h", "te')  # killed mid-write
    assert set(cache.load()) == {("a", "h"), ("b", "h")} and cache.skipped_lines == 1
    cache.append([{**entry, "id": "c"}])
    assert set(cache.load()) == {("a", "h"), ("b", "h"), ("c", "h")} and cache.skipped_lines == 0


# ---------------------------------------------------------------------------------------------
# (b)-(d) the stage on the tiny teacher (1M parameters, its output is noise)

NOTES = [
    ("cardiac", "Pt {n}, {a} yo, presents with substernal chest pressure radiating to the left arm, "
                "diaphoresis; ECG shows ST elevation in II, III, aVF. Seen by Dr. Alma Reyes on 2031-04-{d:02d}."),
    ("respiratory", "{a} yo pt {n} with 4 days of productive cough, fever 38.9 C, crackles at the right base; "
                    "SpO2 91% on room air. MRN 55{d:03d}21."),
    ("gastrointestinal", "Pt {n} ({a} yo) reports epigastric burning after meals and black stools for a week; "
                         "Hb 9.8. Contact: 555-01{d:02d}."),
    ("neurological", "{a} yo pt {n} brought in with sudden right-sided weakness and slurred speech, onset 40 min "
                     "ago; NIHSS 7. Seen at Riverside Clinic 2031-05-{d:02d}."),
]
PROBLEMS = [
    ("Student {n} (grade {g}) worked on: A baker makes {a} trays of {b} muffins. How many muffins?", lambda a, b: a * b),
    ("Session log for {n}: Jo has {a} stickers and gets {b} more. How many stickers now?", lambda a, b: a + b),
    ("Tutor note, student {n}, grade {g}: {a} pages read on Monday and {b} on Tuesday; how many pages in all?",
     lambda a, b: a + b),
]


def make_records(domain: str, n: int, split: str, start: int = 0) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        if domain == "healthcare":
            label, text = NOTES[i % len(NOTES)]
            text = text.format(n=f"Jordan Lee{i}", a=30 + i % 50, d=1 + i % 28)
            groups = {"sex": "FM"[i % 2], "race": "ABC"[i % 3], "age_band": "40-64"}
        else:
            template, solve = PROBLEMS[i % len(PROBLEMS)]
            a, b = 2 + i % 7, 3 + i % 5
            text, label = template.format(n=f"Sam Ortiz{i}", g=3 + i % 4, a=a, b=b), str(solve(a, b))
            groups = {"gender": "FM"[i % 2], "ell": str(i % 3 == 0).lower(), "school_type": "urban"}
        rows.append({"id": f"{domain}-{i:06d}", "text": text, "label": label, "groups": groups, "split": split})
    return rows


def make_project(root: Path, domain: str, n_train: int = 30, n_test: int = 10) -> Path:
    src = root / "data" / domain / "deidentify"
    write_jsonl(src / "train.jsonl", make_records(domain, n_train, "train"))
    write_jsonl(src / "test.jsonl", make_records(domain, n_test, "test", start=n_train))  # distinct texts
    return root


def tiny_params(batch_size: int = 4, max_new_tokens: int = 12) -> Params:
    return Params.model_validate(
        {
            "domains": {"healthcare": {}, "education": {}},
            "synthesize": {"teacher": TINY_TEACHER, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
                           "dtype": "float32"},
        }
    )


@pytest.fixture
def count_generate(monkeypatch):
    """Wrap models.sample (what the transformers teacher calls): record the prompts of every call."""
    calls: list[list[str]] = []
    real = models.sample

    def counting(model, tok, prompts, **kw):
        calls.append(list(prompts))
        return real(model, tok, prompts, **kw)

    monkeypatch.setattr(models, "sample", counting)
    return calls


def only_cache_file(root: Path, domain: str) -> Path:
    (path,) = (root / ".cache" / "synthesize" / domain).glob("*.jsonl")
    return path


@pytest.mark.parametrize("domain", ["healthcare", "education"])
def test_stage_end_to_end_keeps_every_record(tmp_path, domain, count_generate):
    root = make_project(tmp_path, domain)
    summary = syn.main(domain, tiny_params(), root)

    out = root / "data" / domain / "synthesize"
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "test.jsonl", "train.jsonl"]
    report = json.loads((out / "report.json").read_text())
    for split in syn.SPLITS:
        records = read_jsonl(root / "data" / domain / "deidentify" / f"{split}.jsonl")
        rows = read_jsonl(out / f"{split}.jsonl")
        assert [r["id"] for r in rows] == [r["id"] for r in records]  # rows in = rows out, same order
        added = {"train": {"kept"}, "test": {"correct"}}[split] | {"teacher_output", "teacher_answer", "rationale"}
        added |= {"teacher", "agreement", "teacher_votes", "teacher_confidence", "teacher_entropy", "star"}
        for rec, row in zip(records, rows):
            assert set(row) == set(rec) | added and {k: row[k] for k in rec} == rec
            assert row["rationale"] is None or row["teacher_answer"] == rec["label"]
            if split == "train":
                assert row["kept"] == (row["rationale"] is not None)
            else:
                assert row["correct"] == (row["teacher_answer"] == rec["label"])
        counts = report["splits"][split]
        assert counts["records"] == len(records) == report["ledger"][split]["out"]
        assert sum(counts[k] for k in syn.OUTCOMES) == counts["records"]
        assert counts["kept"] == sum(r["rationale"] is not None for r in rows)
        assert counts["unparseable"] == sum(r["teacher_answer"] is None for r in rows)
        assert counts["completion_tokens"] > 0 and counts["prompt_tokens"] > 0
    assert report["teacher"]["spec"] == TINY_TEACHER and Path(report["teacher"]["path"]).is_dir()
    assert report["templates_sha256"] == syn.templates_hash(get_domain(domain))
    assert {k: report["generation"][k] for k in ("batch_size", "max_new_tokens", "dtype", "greedy", "samples")} == {
        "batch_size": 4, "max_new_tokens": 12, "dtype": "float32", "greedy": True, "samples": 1}
    (acct,) = report["teachers"].values()
    assert (acct["requests"], acct["generated"], acct["reused"]) == (40, 40, 0)
    assert acct["completion_tokens"] == report["total"]["completion_tokens"] > 0
    assert report["this_run"] == {**report["this_run"], "generated": 40, "reused": 0}
    assert report["total"]["completion_tokens_per_s"] > 0
    assert sum(len(c) for c in count_generate) == 40 and max(len(c) for c in count_generate) == 4
    assert summary["generated"] == 40 and summary["train"]["records"] == 30


def test_rerun_of_a_finished_synthesis_generates_nothing(tmp_path, monkeypatch):
    root = make_project(tmp_path, "healthcare")
    syn.main("healthcare", tiny_params(), root)
    first = {s: read_jsonl(root / "data/healthcare/synthesize" / f"{s}.jsonl") for s in syn.SPLITS}

    def forbidden(*args, **kw):
        raise AssertionError("a finished synthesis loaded the teacher or generated")

    monkeypatch.setattr(models, "load_causal_lm", forbidden)
    monkeypatch.setattr(models, "sample", forbidden)
    summary = syn.main("healthcare", tiny_params(), root)
    assert (summary["generated"], summary["reused"]) == (0, 40)
    assert {s: read_jsonl(root / "data/healthcare/synthesize" / f"{s}.jsonl") for s in syn.SPLITS} == first


def test_changed_settings_miss_the_cache(tmp_path, count_generate):
    root = make_project(tmp_path, "education", n_train=6, n_test=2)
    syn.main("education", tiny_params(), root)
    syn.main("education", tiny_params(max_new_tokens=5), root)
    assert sum(len(c) for c in count_generate) == 16
    assert len(list((root / ".cache/synthesize/education").glob("*.jsonl"))) == 2


def test_resume_after_a_truncated_cache_regenerates_only_the_missing(tmp_path, count_generate):
    root = make_project(tmp_path, "healthcare")
    syn.main("healthcare", tiny_params(), root)
    cache = only_cache_file(root, "healthcare")
    lines = cache.read_text().splitlines(keepends=True)
    assert len(lines) == 40
    kept_lines = lines[:12]
    cache.write_text("".join(kept_lines) + lines[12][: len(lines[12]) // 2])  # as if killed mid-write
    count_generate.clear()

    summary = syn.main("healthcare", tiny_params(), root)
    assert (summary["generated"], summary["reused"]) == (28, 12)
    regenerated = [p for call in count_generate for p in call]
    assert len(regenerated) == 28
    finished = {json.loads(line)["prompt_hash"] for line in kept_lines}
    assert not finished & {syn.prompt_hash(p) for p in regenerated}
    after = cache.read_text().splitlines(keepends=True)
    assert after[:12] == kept_lines  # finished results untouched (same text and generated_at)
    ids = [json.loads(line)["id"] for line in after]
    assert len(ids) == 40 and len(set(ids)) == 40  # exactly one result per record
    rows = read_jsonl(root / "data/healthcare/synthesize/train.jsonl") + read_jsonl(
        root / "data/healthcare/synthesize/test.jsonl")
    assert sorted(r["id"] for r in rows) == sorted(ids)


KILL_AFTER_FIRST_BATCH = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_synthesize import tiny_params
from tasks import models, synthesize
real, calls = models.sample, []
def generate_then_die(*args, **kw):
    calls.append(1)
    if len(calls) == 2:  # the first batch is in the cache: die hard, as a killed job would
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kw)
models.sample = generate_then_die
synthesize.main("education", tiny_params(), Path({root!r}))
"""


def test_resume_after_a_killed_run_loses_no_finished_batch(tmp_path, count_generate):
    root = make_project(tmp_path, "education")
    script = KILL_AFTER_FIRST_BATCH.format(tests=str(ROOT / "tests"), root=str(root))
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == -9, done.stderr[-3000:]
    assert not (root / "data/education/synthesize").exists()  # no partial outputs
    cache = only_cache_file(root, "education")
    first_batch = cache.read_text().splitlines(keepends=True)
    assert len(first_batch) == 4

    summary = syn.main("education", tiny_params(), root)
    assert (summary["generated"], summary["reused"]) == (36, 4)
    assert sum(len(c) for c in count_generate) == 36
    after = cache.read_text().splitlines(keepends=True)
    assert after[:4] == first_batch
    ids = [json.loads(line)["id"] for line in after]
    assert len(ids) == 40 and len(set(ids)) == 40
