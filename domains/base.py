"""What a domain is: the small set of values that differ between healthcare and education.

Stages never branch on the domain's name; they read these values. A domain package
(`domains/<name>/__init__.py`) exposes one `DOMAIN = Domain(...)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tasks.params import FieldMap


@dataclass(frozen=True)
class Domain:
    name: str
    task: str  # one line: what the model must answer
    labels: tuple[str, ...] | None  # closed label space, or None for open answers (numbers)
    sensitive_attributes: tuple[str, ...]  # group columns for fairness and balanced condensation
    fields: FieldMap  # how the synthetic generator's raw records map onto the record schema
    generate: Callable[[int, int], list[dict]]  # (n, seed) -> raw records with realistic identifiers
    normalize_label: Callable[[str], str | None]  # gold label -> canonical form; None: unknown label
    parse_answer: Callable[[str], str | None]  # model output -> canonical label; None: unparseable
    recognizers: Callable[[], list]  # Presidio recognizers added to the defaults
    entities: tuple[str, ...]  # entity types the de-identifier looks for
    templates: Path  # folder with question.txt (task input) and teacher.txt (chain-of-thought ask)

    def _template(self, name: str) -> str:
        return (self.templates / f"{name}.txt").read_text(encoding="utf-8").strip()

    def question(self, record: dict) -> str:
        """The task input shown to teacher and student (de-identified text only)."""
        return self._template("question").format(text=record["text"], labels=", ".join(self.labels or ()))

    def teacher_prompt(self, record: dict) -> str:
        """The chain-of-thought request: rationale first, then `Answer: <label>`."""
        return self._template("teacher").format(question=self.question(record))
