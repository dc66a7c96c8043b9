"""The synthetic clinical de-id benchmark corpus (bench/clinical_notes.py): gold spans are exact."""
import collections
import importlib.util
import pathlib
import re

import pytest

pytest.importorskip("faker")
_PATH = pathlib.Path(__file__).resolve().parents[1] / "bench" / "clinical_notes.py"
_spec = importlib.util.spec_from_file_location("clinical_notes", _PATH)
clinical_notes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(clinical_notes)

TYPES = {"PERSON", "DATE", "AGE", "ID", "PHONE", "LOCATION", "EMAIL", "URL", "IP"}
ID_KINDS = {"MRN", "ACCOUNT", "HEALTH_PLAN", "NPI", "DEA", "LICENSE", "SSN", "DEVICE", "VEHICLE"}
LOC_KINDS = {"STREET", "CITY", "ZIP", "HOSPITAL", "WARD", "OTHER"}


@pytest.fixture(scope="module")
def notes():
    return clinical_notes.generate(500, seed=11)


def test_spans_exact_sorted_disjoint(notes):
    for note in notes:
        end = 0
        for s in note["spans"]:
            assert note["text"][s["start"]:s["end"]] == s["value"], (note["id"], s)
            assert s["start"] >= end and s["end"] > s["start"], (note["id"], s)
            assert s["value"] == s["value"].strip(), s  # spans carry no padding
            assert s["entity_type"] in TYPES
            assert ("kind" in s) == (s["entity_type"] in ("ID", "LOCATION")), s
            end = s["end"]


def test_deterministic_by_seed(notes):
    assert clinical_notes.generate(500, seed=11) == notes
    other = clinical_notes.generate(50, seed=12)
    assert [n["text"] for n in other] != [n["text"] for n in notes[:50]]


def test_every_type_and_kind_occurs(notes):
    kinds = collections.Counter()
    for note in notes:
        for s in note["spans"]:
            kinds[(s["entity_type"], s.get("kind"))] += 1
    types = {t for t, _ in kinds}
    assert types == TYPES
    assert {k for t, k in kinds if t == "ID"} == ID_KINDS
    assert {k for t, k in kinds if t == "LOCATION"} == LOC_KINDS


def test_length_and_styles(notes):
    lens = [len(n["text"]) for n in notes]
    assert 600 <= sum(lens) / len(lens) <= 1000
    assert min(lens) >= 300 and max(lens) <= 1600
    upper = [n for n in notes if n["text"] == n["text"].upper()]
    assert len(upper) >= 0.1 * len(notes)


def test_ages_are_phi_only_over_89(notes):
    for note in notes:
        for s in note["spans"]:
            if s["entity_type"] == "AGE":
                assert int(s["value"]) >= 90, s


def test_non_phi_distractors_are_not_spans(notes):
    """Vitals, times, small ages, states, eponyms occur in the text but never overlap a span."""
    patterns = [r"\bBP \d{2,3}/\d{2,3}", r"\n0800 PT", r"\bFoley in place", r"\bMurphy's sign",
                r"\b[1-8]\d yo\b", r"\bpain \d/10", r"\bstrength \d/5\b", r", MA\b", r"\brm \d{3,4}\b", r"quit in \d{4}"]
    seen = collections.Counter()
    for note in notes:
        covered = [(s["start"], s["end"]) for s in note["spans"]]
        for pat in patterns:
            for m in re.finditer(pat, note["text"], flags=re.IGNORECASE):
                seen[pat] += 1
                assert not any(a < m.end() and m.start() < b for a, b in covered), (note["id"], m.group())
        for s in note["spans"]:
            assert not s["value"].lower().startswith(("dr.", "mrn", "dr ")), s  # titles/labels stay outside
    assert set(seen) == set(patterns), set(patterns) - set(seen)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def test_checksummed_ids_are_valid(notes):
    """Recognizers may validate checksums, so gold NPIs and DEA numbers must be real-format valid."""
    assert _luhn_ok("808401234567893") and not _luhn_ok("808401234567894")  # CMS example NPI
    ids = [(s["kind"], s["value"].upper()) for n in notes for s in n["spans"] if s["entity_type"] == "ID"]
    npis = [v for k, v in ids if k == "NPI"]
    deas = [v for k, v in ids if k == "DEA"]
    assert npis and deas
    for v in npis:
        assert len(v) == 10 and v[0] in "12" and _luhn_ok("80840" + v), v
    for v in deas:
        d = [int(x) for x in v[2:]]
        assert re.fullmatch(r"[ABFM][A-Z]\d{7}", v), v
        assert (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10 == d[6], v


def test_bad_n():
    with pytest.raises(ValueError):
        clinical_notes.generate(-1, seed=0)
    assert clinical_notes.generate(0, seed=0) == []
