"""Healthcare: triage clinical encounter notes into a body-system category.

Records are clinical notes carrying HIPAA Safe Harbor identifiers; the label is the
working diagnosis category; sensitive attributes are sex, race and age band.
"""

from __future__ import annotations

import re
from pathlib import Path

from domains.base import Domain
from domains.healthcare.generator import generate
from domains.healthcare.recognizers import ENTITIES, recognizers
from tasks.params import FieldMap

LABELS = ("cardiac", "respiratory", "gastrointestinal", "neurological")

# Words a model uses for a category; the first one after "Answer:" wins.
_SYNONYMS = {
    "cardiac": ("cardiac", "cardiovascular", "cardiology", "heart"),
    "respiratory": ("respiratory", "pulmonary", "lung", "breathing"),
    "gastrointestinal": ("gastrointestinal", "gastro", "gi", "abdominal", "digestive", "stomach"),
    "neurological": ("neurological", "neurologic", "neurology", "neuro", "brain", "nervous"),
}
_WORD = {w: label for label, words in _SYNONYMS.items() for w in words}
_WORD_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _WORD), key=len, reverse=True)) + r")\b", re.I)


def normalize_label(label: str) -> str | None:
    label = str(label).strip().lower()
    return label if label in LABELS else _WORD.get(label)


def parse_answer(text: str) -> str | None:
    """The category after the last `Answer:`; else the last category word in the text."""
    tail = text.rsplit("Answer:", 1)[1] if "Answer:" in text else None
    if tail is not None and (m := _WORD_RE.search(tail)):
        return _WORD[m.group(1).lower()]
    words = _WORD_RE.findall(text)
    return _WORD[words[-1].lower()] if words else None


DOMAIN = Domain(
    name="healthcare",
    task="Classify a clinical encounter note into " + ", ".join(LABELS),
    labels=LABELS,
    sensitive_attributes=("sex", "race", "age_band"),
    fields=FieldMap(
        id="encounter_id",
        text="note",
        label="diagnosis",
        groups={"sex": "sex", "race": "race", "age_band": "age_band"},
    ),
    generate=generate,
    normalize_label=normalize_label,
    parse_answer=parse_answer,
    recognizers=recognizers,
    entities=ENTITIES,
    templates=Path(__file__).parent / "templates",
)
