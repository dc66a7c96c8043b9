"""Raw sources -> records: the synthetic generators, files (jsonl, json, csv, parquet), the hub.

Every row read is either a record or a quarantine reason (records in = out + quarantined);
reasons never carry content; ids are positions, never raw ids.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import sys
import time
import types
from pathlib import Path

import pytest

from domains import get_domain
from tasks.params import FieldMap, Source
from tasks.records import Ledger
from tasks.sources import load_records, read_rows, to_record

HEALTH = get_domain("healthcare")
EDU = get_domain("education")


def _load(domain, source, root, max_chars=20_000):
    ledger = Ledger("deidentify")
    records = load_records(domain, source, root, max_chars, ledger)
    ledger.n_out = len(records)
    ledger.check()  # records in = out + quarantined
    return records, ledger


# -- synthetic generators ------------------------------------------------------------------------

@pytest.mark.parametrize("domain", [HEALTH, EDU], ids=["healthcare", "education"])
def test_generator_is_deterministic_and_prefix_stable(domain):
    assert domain.generate(40, 3) == domain.generate(40, 3)
    assert domain.generate(40, 3)[:10] == domain.generate(10, 3)
    assert domain.generate(40, 3) != domain.generate(40, 4)


@pytest.mark.parametrize("domain", [HEALTH, EDU], ids=["healthcare", "education"])
def test_generator_is_fast_and_varied(domain):
    started = time.perf_counter()
    rows = domain.generate(10_000, 0)
    assert time.perf_counter() - started < 20  # ~2 s (healthcare) / ~0.5 s (education) on 2 idle cores
    texts = [r[domain.fields.text] for r in rows]
    assert len(set(texts)) == len(texts)
    first_lines = collections.Counter(t.split("\n")[0][:20] for t in texts)
    assert len(first_lines) > 50  # many headers and phrasings, not a handful of templates


@pytest.mark.parametrize("domain", [HEALTH, EDU], ids=["healthcare", "education"])
def test_planted_identifiers_are_in_the_text(domain):
    for row in domain.generate(300, 1):
        assert row["phi"] and len(row["phi"]) == len(row["phi_types"])
        assert all(value in row[domain.fields.text] for value in row["phi"])


def test_healthcare_notes_labels_and_groups():
    rows = HEALTH.generate(2000, 0)
    lengths = [len(r["note"]) for r in rows]
    assert 450 <= min(lengths) and max(lengths) <= 950
    labels = collections.Counter(r["diagnosis"] for r in rows)
    assert set(labels) == set(HEALTH.labels) and min(labels.values()) >= 0.2 * len(rows)
    assert sum(r["note"].isupper() for r in rows) > 0.1 * len(rows)  # nursing style
    for attr in HEALTH.sensitive_attributes:  # no group value predicts the label
        by_value = collections.defaultdict(set)
        for r in rows:
            by_value[r[attr]].add(r["diagnosis"])
        assert all(len(v) == len(HEALTH.labels) for v in by_value.values()), attr
    assert {r["sex"] for r in rows} == {"female", "male"}
    assert {r["race"] for r in rows} == {"White", "Black", "Hispanic", "Asian", "Other"}
    bands = {"18-44": (18, 44), "45-64": (45, 64), "65-89": (65, 89), "90+": (90, 120)}
    age_re = re.compile(r"\b(\d{2,3}) ?(?:yo|y/o|y\.o\.|-year-old|year old)", re.I)
    for r in rows:
        lo, hi = bands[r["age_band"]]
        assert lo <= int(age_re.search(r["note"])[1]) <= hi
        if r["age_band"] == "90+":
            assert "AGE" in r["phi_types"]
    types_ = collections.Counter(t for r in rows for t in r["phi_types"])
    for kind in ("NAME", "DATE", "MRN", "PHONE", "ADDRESS", "CITY", "ZIP", "AGE", "HOSPITAL", "EMAIL", "SSN",
                 "HEALTH_PLAN", "ACCOUNT", "NPI"):
        assert types_[kind] > 20, kind


def test_healthcare_label_is_inferable_from_the_note():
    """A keyword vote over findings recovers the label for most notes (a teacher can learn it)."""
    cues = {
        "cardiac": ("troponin", "trop", "ecg", "ekg", "chest", "cp", "palpitations", "nstemi", "stemi", "bnp"),
        "respiratory": ("cough", "sob", "wheez", "cxr", "spo2 88", "copd exacerbation", "pneumonia", "nebs"),
        "gastrointestinal": ("abd", "abdominal", "vomit", "n/v", "lipase", "lfts", "ruq", "gi ", "emesis"),
        "neurological": ("headache", "ha ", "weakness", "slurred", "ct head", "stroke", "seizure", "nihss"),
    }
    rows = HEALTH.generate(400, 2)
    right = 0
    for r in rows:
        note = r["note"].lower()
        votes = {label: sum(note.count(c) for c in words) for label, words in cues.items()}
        right += max(votes, key=votes.get) == r["diagnosis"]
    assert right / len(rows) > 0.8


def test_education_records():
    rows = EDU.generate(1000, 0)
    for r in rows:
        assert isinstance(r["answer"], int) and r["answer"] >= 0
        assert r["gender"] in ("female", "male") and r["ell"] in ("yes", "no")
        assert r["school_type"] in ("urban", "rural")
        assert re.search(r"(?:Problem|problem|Q): .*\?", r["session_text"])
    types_ = collections.Counter(t for r in rows for t in r["phi_types"])
    for kind in ("NAME", "STUDENT_ID", "SCHOOL", "EMAIL", "PHONE", "DATE"):
        assert types_[kind] > 100, kind
    # the problem often names the student by first name
    problem = re.compile(r"^(?:Problem|Word problem|Today's problem|Q): .*$", re.M)
    named = sum(any(t == "NAME" and " " not in v and v in problem.search(r["session_text"])[0]
                    for v, t in zip(r["phi"], r["phi_types"], strict=True)) for r in rows)
    assert named > 0.3 * len(rows)


# -- synthetic source ----------------------------------------------------------------------------

def test_synthetic_source_maps_to_records(tmp_path):
    records, ledger = _load(HEALTH, Source(kind="synthetic", n_records=50), tmp_path)
    assert len(records) == 50 and not ledger.quarantined
    assert [r["id"] for r in records[:2]] == ["healthcare-000000", "healthcare-000001"]
    assert set(records[0]) == {"id", "text", "label", "groups"}  # no raw id, no "phi"
    assert set(records[0]["groups"]) == set(HEALTH.sensitive_attributes)
    assert all(r["label"] in HEALTH.labels for r in records)
    assert not list(tmp_path.rglob("*"))  # generated in memory, nothing written


# -- files ---------------------------------------------------------------------------------------

def _write_jsonl_bytes(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_jsonl_file_with_bad_rows_is_quarantined_by_reason(tmp_path):
    good = {"note": "Pt c/o chest pain, troponin up.", "diagnosis": "cardiac", "sex": "female",
            "race": "Asian", "age_band": "45-64", "encounter_id": "MRN-00482913"}
    lines = [
        json.dumps(good).encode(),
        b'{"note": "cut off',  # malformed JSON
        json.dumps({**good, "note": "caf\u00e9"}).encode().replace("caf\\u00e9".encode(), b"caf\xe9"),  # not UTF-8
        json.dumps({k: v for k, v in good.items() if k != "note"}).encode(),  # missing text column
        json.dumps({**good, "note": "   "}).encode(),  # empty text
        json.dumps({**good, "note": 42}).encode(),  # non-string text
        json.dumps({**good, "note": "x" * 500}).encode(),  # over max_chars
        json.dumps({**good, "diagnosis": "dermatology"}).encode(),  # unknown label
        json.dumps({**good, "diagnosis": None}).encode(),  # missing label
        b"[1, 2, 3]",  # not an object
        b"",  # blank lines are not rows
        json.dumps({**good, "race": None, "diagnosis": "Pulmonary"}).encode(),  # missing group, label synonym
    ]
    _write_jsonl_bytes(tmp_path / "data/healthcare/raw/notes.jsonl", lines)
    records, ledger = _load(HEALTH, Source(kind="file", path="notes.jsonl"), tmp_path, max_chars=400)
    assert ledger.n_in == 11 and len(records) == 2 and len(ledger.quarantined) == 9
    assert ledger.reasons == {"malformed_json": 1, "non_utf8": 1, "missing_field": 1, "empty_text": 1,
                              "non_string_text": 1, "text_too_long": 1, "unknown_label": 1, "missing_label": 1,
                              "not_an_object": 1}
    assert [q["position"] for q in ledger.quarantined] == list(range(1, 10))
    assert records[0]["id"] == "healthcare-000000" and records[1]["id"] == "healthcare-000010"
    assert records[1]["label"] == "respiratory" and records[1]["groups"]["race"] == "unknown"
    dumped = json.dumps(ledger.quarantined)
    assert "cut off" not in dumped and "dermatology" not in dumped and "MRN-00482913" not in json.dumps(records)


def test_csv_with_a_field_map_and_a_bad_row(tmp_path):
    path = tmp_path / "data/education/raw/items.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"problem,solution,sex,english_learner\n"
                     b'"Sam has 3 apples, buys 4. How many?",7,F,yes\n'
                     b"Bad \xff\xfe row,2,M,no\n"
                     b"Two plus two?,4,,no\n"
                     b"too,many,cells,here,x\n")
    fields = FieldMap(text="problem", label="solution", groups={"gender": "sex", "ell": "english_learner"})
    records, ledger = _load(EDU, Source(kind="file", path="items.csv", fields=fields), tmp_path)
    assert [r["label"] for r in records] == ["7", "4"]
    assert records[1]["groups"] == {"gender": "unknown", "ell": "no"}
    assert ledger.reasons == {"non_utf8": 1, "malformed_csv_row": 1}


def test_parquet_and_gzipped_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = EDU.generate(5, 0)
    raw = tmp_path / "data/education/raw"
    raw.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), raw / "items.parquet")
    (raw / "items.jsonl.gz").write_bytes(gzip.compress("\n".join(json.dumps(r) for r in rows).encode()))
    from_parquet, _ = _load(EDU, Source(kind="file", path="items.parquet"), tmp_path)
    from_gz, _ = _load(EDU, Source(kind="file", path=str(raw / "items.jsonl.gz")), tmp_path)  # absolute path
    assert from_parquet == from_gz and len(from_gz) == 5
    assert from_gz[0]["label"] == str(rows[0]["answer"])


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(read_rows(HEALTH, Source(kind="file", path="nope.jsonl"), tmp_path))
    (tmp_path / "data/healthcare/raw").mkdir(parents=True)
    (tmp_path / "data/healthcare/raw/notes.xlsx").write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported"):
        list(read_rows(HEALTH, Source(kind="file", path="notes.xlsx"), tmp_path))


def test_hub_source_calls_load_dataset(tmp_path, monkeypatch):
    calls = []

    def load_dataset(hub_id, hub_config, split):
        calls.append((hub_id, hub_config, split))
        return [{"question": "Tom has 2 pens and gets 3 more. How many?", "answer": "2+3=5\n#### 5"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    source = Source(kind="hub", hub_id="openai/gsm8k", hub_config="main", split="test",
                    fields=FieldMap(text="question", label="answer"))
    records, _ = _load(EDU, source, tmp_path)
    assert calls == [("openai/gsm8k", "main", "test")]
    assert records == [{"id": "education-000000", "text": "Tom has 2 pens and gets 3 more. How many?",
                        "label": "5", "groups": {}}]


def test_to_record_is_dict_in_dict_out():
    row = {"note": "SOB x2 days, CXR RLL consolidation", "diagnosis": "lung", "sex": "male", "race": "Black",
           "age_band": "18-44"}
    record, reason = to_record(HEALTH, HEALTH.fields, row, 7, 20_000)
    assert reason is None
    assert record == {"id": "healthcare-000007", "text": row["note"], "label": "respiratory",
                      "groups": {"sex": "male", "race": "Black", "age_band": "18-44"}}


# -- public data beside the checkout -------------------------------------------------------------

def test_gsm8k_jsonl_loads_as_education_records(shared_data, tmp_path):
    path = shared_data / "gsm8k" / "test.jsonl"
    source = Source(kind="file", path=str(path), fields=FieldMap(text="question", label="answer"))
    records, ledger = _load(EDU, source, tmp_path)
    assert ledger.n_in == 1319 and len(records) + len(ledger.quarantined) == 1319
    assert len(records) == 1319  # every GSM8K answer ends with "#### <number>"
    first = json.loads(path.read_text().splitlines()[0])
    assert records[0]["label"] == first["answer"].rsplit("####", 1)[1].strip().replace(",", "")


def test_student_performance_csv_with_a_mapping(shared_data, tmp_path):
    path = shared_data / "student_performance" / "student-mat.csv"
    fields = FieldMap(text="reason for school selection", label="final grade",
                      groups={"gender": "gender", "school_type": "address"})
    records, ledger = _load(EDU, Source(kind="file", path=str(path), fields=fields), tmp_path)
    assert ledger.n_in == 395 and len(records) == 395 and not ledger.quarantined
    assert {r["groups"]["gender"] for r in records} == {"F", "M"}
    assert {r["groups"]["school_type"] for r in records} == {"U", "R"}


def test_pubmedqa_json_object_of_objects(shared_data, tmp_path):
    """PubMedQA is one JSON object keyed by PMID; its yes/no/maybe labels are not healthcare's."""
    path = shared_data / "pubmedqa" / "ori_pqal.json"
    records, ledger = _load(HEALTH, Source(kind="file", path=str(path),
                                           fields=FieldMap(text="QUESTION", label="final_decision")), tmp_path)
    assert ledger.n_in == 1000 and not records and ledger.reasons == {"unknown_label": 1000}
