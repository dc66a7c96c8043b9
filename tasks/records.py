"""Records on disk: JSON lines written atomically, and the quarantine ledger.

A record after ingest is `{"id", "text", "label", "groups": {attr: value}}`; stages add keys.
Nothing is silently dropped: every record a stage reads is either written out or
quarantined with a reason, and `Ledger.check()` asserts records in = out + quarantined.
A quarantine entry names the record's position and reason, never its content (it may hold PHI).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write all rows or nothing: a crash leaves the previous file (or none), never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def write_json(path: str | Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class QuarantineError(ValueError):
    """Raised when every input record was quarantined: there is nothing to go on with."""


@dataclass
class Ledger:
    """Counts records in, out and quarantined for one stage, with a reason per quarantined record."""

    stage: str
    n_in: int = 0
    n_out: int = 0
    quarantined: list[dict] = field(default_factory=list)

    def quarantine(self, position: int | str, reason: str, record_id: str | None = None) -> None:
        self.quarantined.append({"stage": self.stage, "position": position, "id": record_id, "reason": reason})

    @property
    def reasons(self) -> dict[str, int]:
        return dict(Counter(q["reason"].split(":")[0] for q in self.quarantined))

    def check(self) -> None:
        if self.n_in != self.n_out + len(self.quarantined):
            raise AssertionError(
                f"{self.stage}: {self.n_in} records in != {self.n_out} out + {len(self.quarantined)} quarantined"
            )

    def summary(self) -> dict:
        self.check()
        return {"in": self.n_in, "out": self.n_out, "quarantined": len(self.quarantined), "reasons": self.reasons}

    def write(self, path: str | Path) -> None:
        """Write the quarantine file (always, even empty, so DVC tracks a stable output)."""
        self.check()
        write_jsonl(path, self.quarantined)
