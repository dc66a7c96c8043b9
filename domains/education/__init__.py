"""Education: solve the arithmetic word problem in a tutoring-session record.

Records are tutoring logs carrying FERPA student identifiers; the label is the numeric
answer; sensitive attributes are gender, English-learner status and school locale.
"""

from __future__ import annotations

import re
from pathlib import Path

from domains.base import Domain
from domains.education.generator import generate
from domains.education.recognizers import ENTITIES, recognizers
from tasks.params import FieldMap

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _canonical(number: str) -> str | None:
    try:
        value = float(number.replace(",", ""))
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else f"{value:g}"


def normalize_label(label: str) -> str | None:
    label = str(label).rsplit("####", 1)[-1]  # GSM8K gold answers end with "#### 72"
    m = _NUMBER.fullmatch(label.strip())
    return _canonical(m.group(0)) if m else None


def parse_answer(text: str) -> str | None:
    """The first number after the last `Answer:`; else the last number in the text."""
    tail = text.rsplit("Answer:", 1)[1] if "Answer:" in text else None
    if tail is not None and (m := _NUMBER.search(tail)):
        return _canonical(m.group(0))
    numbers = _NUMBER.findall(text)
    return _canonical(numbers[-1]) if numbers else None


DOMAIN = Domain(
    name="education",
    task="Solve the word problem in a tutoring record; the answer is a number",
    labels=None,
    sensitive_attributes=("gender", "ell", "school_type"),
    fields=FieldMap(
        id="item_id",
        text="session_text",
        label="answer",
        groups={"gender": "gender", "ell": "ell", "school_type": "school_type"},
    ),
    generate=generate,
    normalize_label=normalize_label,
    parse_answer=parse_answer,
    recognizers=recognizers,
    entities=ENTITIES,
    templates=Path(__file__).parent / "templates",
)
