"""The leak guard: what matches where, masking, and that a planted canary stops the pipeline.

Unit tests build `Identifiers` by hand (dict-in, leaks-out); the stage test runs deidentify and
the guard on a small raw file; the end-to-end tests run the real pipeline in a temporary git +
DVC project (see test_pipeline.py): a canary literal that no recognizer catches makes `dvc repro`
and the Prefect flow fail at the guard with nothing registered, and a clean Prefect run passes the
guard and registers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from test_pipeline import BIN, project  # noqa: F401  (`project` is a fixture)

from domains.healthcare.generator import generate
from tasks import deidentify, guard
from tasks.params import Guard, Params
from tasks.records import read_jsonl, write_jsonl

CANARY = "CANARY-7f3a9c"  # no recognizer matches it: only the guard can catch it


def index(*entries: tuple[str, str, str, str | None], **config) -> guard.Identifiers:
    ids = guard.Identifiers(Guard(**config))
    for value, entity, source, record in entries:
        ids.add(value, entity, source, record)
    return ids


def leaks(ids: guard.Identifiers, text: str, record: str | None, **texts) -> list[str]:
    return sorted(i.value for i in guard.Scanner(ids, **texts).text(text, record))


# -- matching --------------------------------------------------------------------------------

def test_mask_keeps_first_characters_only():
    assert guard.mask("John Smith") == "J*** S****"
    assert guard.mask("(617) 284-1234") == "(6**) 2**-1***"
    assert guard.mask("a.b@x.org") == "a.b@x.o**"


def test_short_values_match_in_their_record_long_ones_anywhere():
    ids = index(("Lopez", "NAME", "planted", "r1"), ("Maria Lopez", "NAME", "planted", "r2"),
                ("02139", "ZIP", "planted", "r1"), ("(617) 284-1234", "PHONE", "planted", "r1"),
                ("maria.lopez@gmail.com", "EMAIL", "planted", "r1"))
    assert leaks(ids, "Mrs. LOPEZ called.", "r1") == ["Lopez"]
    assert leaks(ids, "Mrs. Lopez called.", "r9") == []  # a one-word name: only in its own record
    assert leaks(ids, "maria  LOPEZ was seen", "r9") == ["Maria Lopez"]  # two words: anywhere
    assert leaks(ids, "Lopez seen", None) == []  # a log line has no record: short values never match
    assert leaks(ids, "ZIP 02139", "r1") == ["02139"] and leaks(ids, "ZIP 02139", "r2") == []
    for phone in ("617.284.1234", "6172841234", "call 617 284 1234 now", "+1 (617) 284-1234"):
        assert leaks(ids, phone, "r7") == ["(617) 284-1234"], phone
    assert leaks(ids, "61728412345", "r7") == []  # a longer number is another number
    # the address holds the name too: both are reported
    assert leaks(ids, "write to Maria.Lopez@gmail.com", None) == ["Maria Lopez", "maria.lopez@gmail.com"]


def test_what_is_never_matched():
    ids = index(("93 yo", "AGE", "planted", "r1"), ("July 4th", "DATE", "planted", "r1"),
                ("1234", "MRN", "planted", "r1"), ("Will", "NAME", "planted", "r1"),
                ("Sung-min Kim", "NAME", "planted", "r1"), ("7/22/2023", "DATE", "planted", "r1"))
    assert ids.skipped == {"age": 1, "date_without_year": 1, "small_number": 1, "stop_word_or_short": 1}
    assert leaks(ids, "Pt is 93 yo, seen July 4th, code 1234; will call in ~2 min", "r1") == []
    assert leaks(ids, "seen on 7/22/2023 by Dr Kim", "r1") == ["7/22/2023", "Sung-min Kim"]
    assert leaks(ids, "seen on 7/22/2023", "r2") == []  # dates only in their own record


def test_surrogates_are_excused_but_canaries_never():
    # r2's de-identified text holds a fake MRN that equals r1's real one; r2 never held it
    ids = index(("MRN 4417730", "MEDICAL_RECORD_NUMBER", "detected", "r1"), ("CANARY-00042", "CANARY", "canary", None))
    texts = {"raw_left": {"r2": "MRN \n seen"}, "deidentified": {"r2": "MRN 4417730 seen CANARY-00042"}}
    assert leaks(ids, "MRN 4417730 seen CANARY-00042", "r2", **texts) == ["CANARY-00042"]
    assert leaks(ids, "the MRN is 4417730", "r2", **texts) == []  # the teacher copied the fake
    assert leaks(ids, "MRN 4417730", "r3", **texts) == ["MRN 4417730"]  # r3's text is unknown: counted
    left = {"raw_left": {"r2": "MRN 4417730 seen"}, "deidentified": {"r2": "MRN 4417730 seen"}}
    assert leaks(ids, "MRN 4417730", "r2", **left) == ["MRN 4417730"]  # r2 held it and it was left


def test_an_ner_guess_does_not_overrule_another_records_decision():
    ids = guard.Identifiers(Guard())
    ids.add("Harvard Pilgrim", "PERSON", "detected", "r1", guess=True)
    ids.add("Maria Lopez", "PERSON", "detected", "r1", guess=True)
    texts = {"raw_left": {"r2": "plan HARVARD PILGRIM"}, "deidentified": {"r2": "plan HARVARD PILGRIM"}}
    assert leaks(ids, "plan HARVARD PILGRIM", "r2", **texts) == []  # r2's own text: left alone there
    assert leaks(ids, "Maria Lopez says hi", "r2", **texts) == ["Maria Lopez"]  # not r2's: a leak
    upper = guard.Identifiers(Guard())
    upper.add("URINARY INCONTINENCE", "LOCATION", "detected", "r1", guess=True)
    assert leaks(upper, "urinary incontinence", "r2") == [] and leaks(upper, "urinary incontinence", None) == []


def test_every_identifier_is_found_in_its_own_raw_note():
    """The normalisation meets the generator's real formats (UPPER-CASE notes, "LOPEZ, ANA", phones)."""
    for n, row in enumerate(generate(300, 0)):
        for entity, value in zip(row["phi_types"], row["phi"], strict=True):
            ids = index((value, entity, "planted", "r"))
            expected = [] if ids.skipped else [value]  # ages and dates without a year are skipped
            assert leaks(ids, row["note"], "r") == expected, (n, entity)


# -- the stage on a raw file -----------------------------------------------------------------

def stage_params(path: str, **deid) -> Params:
    return Params.model_validate({
        "domains": {"healthcare": {"source": {"kind": "file", "path": path}, "test_fraction": 0.3}},
        "deidentify": {"canaries": 1, **deid},
    })


def _tagged(row: dict) -> str:
    """The note with every planted identifier replaced: a de-identification known to be perfect."""
    text = row["note"]
    for value in sorted(row["phi"], key=len, reverse=True):
        text = text.replace(value, "<PHI>")
    return text


def test_stage_fails_on_a_canary_literal_and_on_leaks_downstream_never_writing_them(tmp_path: Path):
    rows = generate(12, 3)
    rows[4]["note"] += f"\nRef {CANARY}."
    raw = tmp_path / "data/healthcare/raw"
    write_jsonl(raw / "notes.jsonl", rows)
    params = stage_params("notes.jsonl", canary_literals=[CANARY])
    deidentify.main("healthcare", params, tmp_path)
    out = tmp_path / "data/healthcare/deidentify"
    canaries = json.loads((out / "canaries.json").read_text())
    assert canaries["literals"] == [CANARY] and canaries["canaries"]
    # the literal survives de-identification in its record: the guard must fail
    with pytest.raises(guard.LeakError, match="deidentify/(train|test).jsonl"):
        guard.main("healthcare", params, tmp_path)
    report_text = (tmp_path / "data/healthcare/guard/report.json").read_text()
    report = json.loads(report_text)
    assert not report["passed"] and report["identifiers"]["detected"] and report["identifiers"]["canary"]
    canary = [leak for leak in report["leaks"] if leak["source"] == "canary"]
    assert {leak["masked"] for leak in canary} == {"C*****-7*****"} and CANARY not in report_text
    assert {(leak["record"], leak["field"]) for leak in canary if leak["record"]} == {("healthcare-000004", "text")}
    assert not any(value in report_text for row in rows for value in row["phi"] if len(value) > 4)

    # a perfect de-identification (every planted identifier out) passes; planted values and
    # canaries alone, so the check does not hang on the recognizers' recall
    params = params.model_copy(update={"guard": Guard(redetect=False)})
    by_id = {f"healthcare-{n:06d}": row for n, row in enumerate(rows)}
    rows[4]["note"] = rows[4]["note"].replace(f"\nRef {CANARY}.", "")
    for split in ("train", "test"):
        records = read_jsonl(out / f"{split}.jsonl")
        write_jsonl(out / f"{split}.jsonl", [{**r, "text": _tagged(by_id[r["id"]])} for r in records])
    (out / "audit.json").unlink()  # its examples of de-identified text hold the literal too
    summary = guard.main("healthcare", params, tmp_path)
    report = json.loads((tmp_path / "data/healthcare/guard/report.json").read_text())
    assert summary["passed"] and report["passed"] and report["identifiers"]["planted"]["NAME"] > 12
    assert report["identifiers"]["canary"]["PERSON"] == 1 and "detected" not in report["identifiers"]

    # ...until a "teacher" writes a patient's name and phone into a rationale and a log line
    train = read_jsonl(out / "train.jsonl")
    victim = next(r for r in rows if "PHONE" in r["phi_types"])
    name = next(v for t, v in zip(victim["phi_types"], victim["phi"])
                if t == "NAME" and re.fullmatch(r"[A-Za-z-]{3,},? [A-Za-z-]{3,}", v))
    phone = victim["phi"][victim["phi_types"].index("PHONE")]
    write_jsonl(tmp_path / "data/healthcare/synthesize/train.jsonl",
                [{**train[0], "rationale": f"Like {name}, call {phone}."}] + train[1:])
    (tmp_path / "logs/healthcare").mkdir(parents=True)
    (tmp_path / "logs/healthcare/distill.log").write_text(f"WARNING bad row: {phone}\n")
    with pytest.raises(guard.LeakError) as caught:
        guard.main("healthcare", params, tmp_path)
    found = {(leak.file, leak.field) for leak in caught.value.leaks}
    assert found == {("data/healthcare/synthesize/train.jsonl", "rationale"), ("logs/healthcare/distill.log", "line 1")}
    report_text = (tmp_path / "data/healthcare/guard/report.json").read_text()
    assert name not in report_text and phone not in report_text and guard.mask(name) in report_text


def test_check_tree_scans_a_folder_like_mlflow_artifacts(tmp_path: Path):
    rows = generate(6, 1)
    write_jsonl(tmp_path / "data/healthcare/raw/notes.jsonl", rows)
    params = stage_params("notes.jsonl")
    params = params.model_copy(update={"guard": Guard(redetect=False)})
    tree = tmp_path / "artifacts"
    (tree / "model").mkdir(parents=True)
    (tree / "model/weights.safetensors").write_bytes(b"\0\1" + rows[0]["phi"][0].encode())
    (tree / "model_card.md").write_text("A clinical student.\n")
    assert guard.check_tree(tree, "healthcare", params, tmp_path)["leaks"] == 0
    email = next(v for row in rows for t, v in zip(row["phi_types"], row["phi"]) if t == "EMAIL")
    (tree / "model_card.md").write_text(f"Example: contact {email}\n")
    with pytest.raises(guard.LeakError, match="model_card.md"):
        guard.check_tree(tree, "healthcare", params, tmp_path)


def test_check_tree_skips_what_the_guard_passed_and_still_catches_new_files(tmp_path: Path):
    rows = generate(6, 1)
    write_jsonl(tmp_path / "data/healthcare/raw/notes.jsonl", rows)
    params = stage_params("notes.jsonl")
    tree = tmp_path / "artifacts"
    tree.mkdir()
    email = next(v for row in rows for t, v in zip(row["phi_types"], row["phi"]) if t == "EMAIL")
    (tree / "metrics.json").write_text('{"accuracy": 0.7}\n')
    passed = {"passed": True, "files": {"data/healthcare/fairness/metrics.json": {
        "lines": 1, "leaks": 0, "sha256": guard._sha256(tree / "metrics.json")}}}
    assert guard.verified_hashes({**passed, "passed": False}) == set()
    result = guard.check_tree(tree, "healthcare", params, tmp_path, guard.verified_hashes(passed))
    assert result["verified"] == 1 and result["files"] == 0 and result["redetect"] is False
    (tree / "model_card.md").write_text(f"Example: contact {email}\n")  # built after the guard ran
    with pytest.raises(guard.LeakError, match="model_card.md"):
        guard.check_tree(tree, "healthcare", params, tmp_path, guard.verified_hashes(passed))


# -- end to end ------------------------------------------------------------------------------

def _registered(db: Path) -> list:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{db}").search_registered_models()


def _quick_fairness(root: Path, **params) -> None:
    """Fewer fairness probes and no bootstrap (the guard reads the report, not its statistics)."""
    raw = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in {"probe_max_prompts": 4, "bootstrap_resamples": 0}.items():
        if key in raw["fairness"]:
            raw["fairness"][key] = value
    for section, values in params.items():
        raw[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.slow
def test_canary_literal_stops_dvc_and_the_flow_before_register(project: Path, harness):  # noqa: F811
    """Upstream stages run in-process and are recorded in dvc.lock (as the Prefect flow does), so
    `dvc repro` runs the guard alone: it fails, and register never runs; nor under the flow."""
    from flows.dvc_lock import record, stage_name
    from flows.pipeline import STAGE_MAIN, pipeline
    from tasks.params import STAGES, load_params

    rows = generate(40, 5)
    rows[7]["note"] += f"\nStudy ref {CANARY}."
    write_jsonl(project / "data/healthcare/raw/notes.jsonl", rows)
    _quick_fairness(project, domains={"healthcare": {"source": {"kind": "file", "path": "notes.jsonl"},
                                                     "test_fraction": 0.3}},
                    deidentify={"canary_literals": [CANARY]})
    params = load_params(project / "params.yaml")
    for stage in STAGES[:STAGES.index("guard")]:
        STAGE_MAIN[stage]("healthcare", params, project)
        record(project, stage_name(stage, "healthcare"))

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["dvc", "repro", "register@healthcare"], cwd=project, env=env, capture_output=True,
                          text=True, check=False)
    log = done.stdout + done.stderr
    assert done.returncode != 0, log[-3000:]
    assert "Running stage 'guard@healthcare'" in log and "Running stage 'register@healthcare'" not in log
    assert "LeakError" in log and "guard@healthcare" in log, log[-3000:]
    report_text = (project / "data/healthcare/guard/report.json").read_text()
    report = json.loads(report_text)
    assert not report["passed"] and report["missing"] == [] and CANARY not in report_text
    canary = {(leak["file"], leak["record"]) for leak in report["leaks"] if leak["source"] == "canary"}
    assert {record for _, record in canary if record} == {"healthcare-000007"}
    assert {"data/healthcare/synthesize/train.jsonl", "data/healthcare/synthesize/test.jsonl"} & {f for f, _ in canary}
    assert "leaked" in (project / "logs/healthcare/guard.log").read_text()
    assert not (project / "data/healthcare/register/registration.json").exists()
    assert _registered(project / "mlruns.db") == []
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert "fairness@healthcare" in lock["stages"] and "guard@healthcare" not in lock["stages"]

    # the Prefect flow skips the recorded stages, runs the guard, and fails the same way
    with pytest.raises(guard.LeakError, match="leaked"):
        pipeline(domain="healthcare", root=str(project))
    assert not (project / "data/healthcare/register/registration.json").exists()
    assert _registered(project / "mlruns.db") == []


@pytest.mark.slow
def test_prefect_clean_run_passes_the_guard_and_registers(project: Path, harness):  # noqa: F811
    """The default synthetic notes, surrogates and all: no false alarm from teacher outputs, student
    generations, reports, tokenizer or logs. (It fails, rightly, when de-identification misses one.)"""
    from flows.pipeline import pipeline

    _quick_fairness(project)
    summaries = pipeline(domain="healthcare", root=str(project))
    assert summaries["guard"]["passed"] and summaries["register"]
    report = json.loads((project / "data/healthcare/guard/report.json").read_text())
    assert report["passed"] and report["identifiers"]["canary"] and report["identifiers"]["planted"]
    assert set(report["files"]) >= {"data/healthcare/distill/predictions.jsonl",
                                    "data/healthcare/synthesize/train.jsonl", "logs/healthcare/deidentify.log"}
    assert report["missing"] == []
    (model,) = _registered(project / "mlruns.db")
    assert model.latest_versions
