"""Raw rows for a domain, mapped onto the record schema, or quarantined with a reason.

Sources (`params.yaml` domains.<d>.source, see `tasks/params.py:Source`):
  synthetic  the domain's generator, `generate(n_records, seed=0)`, in memory (never on disk);
  file       jsonl / json / csv / parquet (.gz for jsonl, json and csv); a relative path is
             under `data/<domain>/raw/`;
  hub        `datasets.load_dataset(hub_id, hub_config, split=split)`.

Each raw row becomes `{"id", "text", "label", "groups"}` through the source's FieldMap (or the
domain's), or a quarantine reason. Ids are `f"{domain}-{position:06d}"` by input position
(0-based over the rows read, blank lines not counted): raw ids may be MRNs or student numbers
and never travel. Quarantined: malformed JSON, non-UTF-8 bytes, a row that is not an object,
a missing text or label column, empty or non-string text, text over `max_chars`, a label the
domain does not know. A missing group value becomes "unknown" (the record stays; the fairness
stage reports the group). Reasons name columns and sizes, never content.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from pathlib import Path
from typing import Iterable, Iterator

from domains.base import Domain
from tasks.params import FieldMap, Source

SYNTHETIC_SEED = 0
UNKNOWN_GROUP = "unknown"

Row = tuple[int, dict | None, str | None]  # (position, raw row or None, quarantine reason or None)


def resolve_path(domain: str, source: Source, root: str | Path) -> Path:
    path = Path(source.path)
    return path if path.is_absolute() else Path(root) / "data" / domain / "raw" / path


def _open_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def _jsonl_rows(data: bytes) -> Iterator[Row]:
    position = 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            yield position, None, "non_utf8"
        else:
            try:
                row = json.loads(text)
            except json.JSONDecodeError:
                yield position, None, "malformed_json"
            else:
                yield (position, row, None) if isinstance(row, dict) else (position, None, "not_an_object")
        position += 1


def _json_rows(data: bytes) -> Iterator[Row]:
    """A .json file: a list of objects, an object of objects keyed by id (PubMedQA), or JSON lines."""
    try:
        whole = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        yield from _jsonl_rows(data)
        return
    if isinstance(whole, dict) and whole and all(isinstance(v, dict) for v in whole.values()):
        whole = list(whole.values())
    if not isinstance(whole, list):
        whole = [whole]
    for position, row in enumerate(whole):
        yield (position, row, None) if isinstance(row, dict) else (position, None, "not_an_object")


def _csv_rows(data: bytes) -> Iterator[Row]:
    # surrogateescape keeps undecodable bytes as lone surrogates, so one bad row does not sink the file
    text = data.decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
    for position, row in enumerate(csv.DictReader(io.StringIO(text, newline=""))):
        if None in row:  # more cells than header columns
            yield position, None, "malformed_csv_row"
        elif any(isinstance(v, str) and any("\udc80" <= ch <= "\udcff" for ch in v) for v in row.values()):
            yield position, None, "non_utf8"
        else:
            yield position, row, None


def _parquet_rows(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    for position, row in enumerate(pq.read_table(path).to_pylist()):
        yield position, row, None


def read_rows(domain: Domain, source: Source, root: str | Path) -> Iterator[Row]:
    """Raw rows in input order; rows that cannot even be read come with their reason."""
    if source.kind == "synthetic":
        for position, row in enumerate(domain.generate(source.n_records, SYNTHETIC_SEED)):
            yield position, row, None
    elif source.kind == "file":
        path = resolve_path(domain.name, source, root)
        if not path.is_file():
            raise FileNotFoundError(f"{domain.name} source file {path} does not exist")
        suffixes = [s for s in path.suffixes if s != ".gz"]
        kind = suffixes[-1] if suffixes else ""
        if kind in (".jsonl", ".ndjson"):
            yield from _jsonl_rows(_open_bytes(path))
        elif kind == ".json":
            yield from _json_rows(_open_bytes(path))
        elif kind == ".csv":
            yield from _csv_rows(_open_bytes(path))
        elif kind == ".parquet":
            yield from _parquet_rows(path)
        else:
            raise ValueError(f"{path}: unsupported file type {kind!r} (jsonl, csv or parquet)")
    else:  # hub
        import datasets

        dataset = datasets.load_dataset(source.hub_id, source.hub_config, split=source.split)
        for position, row in enumerate(dataset):
            yield position, dict(row), None


def _missing(value) -> bool:
    return (value is None or (isinstance(value, float) and math.isnan(value))
            or (isinstance(value, str) and not value.strip()))


def to_record(domain: Domain, fields: FieldMap, row: dict, position: int, max_chars: int,
              ) -> tuple[dict | None, str | None]:
    """One raw row -> (record, None) or (None, quarantine reason)."""
    for role, column in (("text", fields.text), ("label", fields.label)):
        if column not in row:
            return None, f"missing_field: {role} column {column!r}"
    text = row[fields.text]
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return None, "non_utf8"
    if text is None:
        return None, "missing_text"
    if not isinstance(text, str):
        return None, f"non_string_text: {type(text).__name__}"
    if not text.strip():
        return None, "empty_text"
    if len(text) > max_chars:
        return None, f"text_too_long: {len(text)} chars > max_chars {max_chars}"
    if _missing(row[fields.label]):
        return None, "missing_label"
    label = domain.normalize_label(str(row[fields.label]))
    if label is None:
        return None, "unknown_label"
    groups = {attr: UNKNOWN_GROUP if _missing(row.get(column)) else str(row[column]).strip()
              for attr, column in fields.groups.items()}
    record = {"id": f"{domain.name}-{position:06d}", "text": text, "label": label, "groups": groups}
    if fields.person and not _missing(row.get(fields.person)):
        record["_person"] = str(row[fields.person])  # deidentify keys surrogates by it; never written
    return record, None


def to_records(domain: Domain, rows: Iterable[Row], fields: FieldMap, max_chars: int, ledger) -> list[dict]:
    """Every row is counted in `ledger.n_in` and either returned as a record or quarantined there."""
    records = []
    for position, row, reason in rows:
        ledger.n_in += 1
        if reason is None:
            record, reason = to_record(domain, fields, row, position, max_chars)
        if reason is not None:
            ledger.quarantine(position, reason, f"{domain.name}-{position:06d}")
            continue
        records.append(record)
    return records


def load_records(domain: Domain, source: Source, root: str | Path, max_chars: int, ledger) -> list[dict]:
    """`read_rows` then `to_records` with the source's field map (or the domain's)."""
    return to_records(domain, read_rows(domain, source, root), source.fields or domain.fields, max_chars, ledger)
