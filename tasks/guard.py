"""Leak guard: no identifier that entered the pipeline may appear in anything it produced.

    stillhouse stage guard --domain healthcare     # what `dvc repro guard@healthcare` runs

Inputs:  the domain's raw source, re-read in memory as deidentify reads it (`tasks/sources.py`);
         data/<domain>/deidentify/canaries.json when present; the files it checks (below).
Outputs: data/<domain>/guard/report.json  passed, files scanned with counts, identifiers checked
         per source and type (counts only), leaks (file, record id, field, type, MASKED value).
Params:  domains.<d> (the source), deidentify (the analyzer's settings), guard.

Identifiers are held in memory only, never written, not even hashed (a hash of a name or a
phone number, salted or not, is brute-forced in seconds when the salt sits beside it):
  canary    canaries.json: "canaries" (fake identifiers deidentify planted, with the record id)
            and "literals" (strings a user planted in the raw data); must never appear downstream;
  planted   a raw row's `phi` list with types in `phi_types` (the synthetic generators write them);
  detected  what the de-identifier's own analyzer (`tasks.deidentify.detect_all`) finds in the raw text.

Checked: every text file under data/<domain>/{deidentify,synthesize,condense,distill,fairness}/
(de-identified records, teacher outputs and rationales, the condensed set, student generations
on held-out prompts in distill/predictions.jsonl, the student's config and tokenizer files, every
report, metric and plot table), the synthesis cache (.cache/synthesize/<domain>/) and the stage
logs logs/<domain>/*.log (the flow and `stillhouse stage` write them). `check_tree()` checks any
folder the same way (register calls it on its MLflow run's artifacts before creating a version);
files whose SHA-256 the passed guard report lists are not read twice, and since every other file
register logs is built from those files and params, it checks them without re-detection (the
analyzer's pass over the raw notes is the guard's largest cost).

Matching (a guard that cries wolf gets switched off, so precision matters):
  - text is compared as lower-case word tokens (`\\w+`), numbers as their digits alone, so
    "(617) 284-1234", "617.284.1234" and "6172841234" are one number, "LOPEZ, Ana" is "lopez ana";
  - high-specificity values match anywhere, in any record or file: canaries, names and places
    of two or more words (each word of a name also counts alone, in its own record), emails,
    street addresses, numbers of `guard.min_digits_anywhere` digits or more;
  - short or common values match only in outputs of the same record id: one-word names and
    places, numbers of `min_digits` to `min_digits_anywhere - 1` digits, dates with a year;
  - never matched: dates without a year, numbers under `min_digits` digits (ages, doses,
    vitals), single words that are English stop words or on the domain's allow list;
  - spaCy's guesses are weaker evidence: one in an UPPER-CASE note ("URINARY INCONTINENCE" as a
    place) stays in its own record, and one from another record never overrules a record whose
    own text holds the value and was left alone there ("Harvard Pilgrim", a person in one note,
    a health plan in the next); record fields `label` and `groups` are categories, not text;
  - a value the de-identifier itself wrote into a record (a surrogate that happens to equal some
    identifier; 7-digit ids and shifted dates collide at scale) is no leak in that record's
    outputs: a match there counts only when the raw text left unchanged by de-identification
    also holds it. Canaries are never excused.

On any leak the report is written, an error names the files and counts, and `LeakError` is
raised, so `dvc repro` and the Prefect flow stop before register.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from spacy.lang.en.stop_words import STOP_WORDS

from domains import get_domain
from domains.base import Domain
from tasks import deidentify
from tasks.params import Guard, Params, stage_dir
from tasks.records import Ledger, write_json
from tasks.sources import read_rows, to_records

PARAMS = ("domains.{domain}", "deidentify", "guard")
LOG = logging.getLogger("stillhouse")

# Stage folders checked whole (every text file, so a file a stage adds later is checked too), under
# data/<domain>/, and the files they must hold (listed as missing otherwise); jsonl rows with an
# "id" are matched per record.
STAGE_DIRS = ("deidentify", "synthesize", "condense", "distill", "fairness")
EXPECTED = (
    "deidentify/train.jsonl", "deidentify/test.jsonl", "synthesize/train.jsonl", "synthesize/test.jsonl",
    "condense/train.jsonl", "distill/predictions.jsonl", "distill/metrics.json", "distill/history.csv",
    "distill/student", "fairness/report.json",
)
# The canaries' own list (fake values, the guard's input); dotfiles: .gitignore, half-written temp files.
NOT_SCANNED = {"canaries.json"}
# Record fields that are no text: the id, and the categorical label and groups that travel by design
# (a guess of spaCy's in an UPPER-CASE note, "FEMALE" as a person, must not flag every record's sex).
SCHEMA_FIELDS = {"id", "label", "groups", "split"}
BINARY_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".gguf", ".png", ".jpg", ".parquet", ".pkl", ".npy"}

# Entity types (generators' `phi_types` and Presidio's) by how they are matched; others by shape.
NAMES = {"NAME", "PERSON"}
DATES = {"DATE", "DATE_TIME"}
ALWAYS_ANYWHERE = {"EMAIL", "EMAIL_ADDRESS", "ADDRESS", "STREET_ADDRESS", "URL", "IP_ADDRESS"}
SKIPPED = {"AGE"}  # "93 yo": the number alone is a small number; the age band travels as a group
_YEAR = re.compile(r"\b(?:19|20)\d\d\b|\b\d{1,2}[/-]\d{1,2}[/-]\d\d\b")
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+(?:[ .\-/()]{1,2}\d+)*")  # digit groups joined as ids and phones are written
_GROUP = re.compile(r"\d+")
MAX_GROUPS = 6  # a number is at most this many digit groups ("+1 (617) 284-1234" is four)


class LeakError(RuntimeError):
    """An identifier that entered the pipeline was found downstream; `leaks` says where (masked)."""

    def __init__(self, message: str, leaks: list[Leak]):
        super().__init__(message)
        self.leaks = leaks


@dataclass(frozen=True)
class Identifier:
    value: str  # the raw value: memory only, never written
    entity: str
    source: str  # canary | planted | detected
    record: str | None  # the record it entered with; None for literals
    guess: bool = False  # found by spaCy's NER alone (no pattern, no ground truth)


@dataclass(frozen=True)
class Leak:
    file: str
    record: str | None
    field: str
    entity: str
    source: str
    masked: str


def mask(value: str) -> str:
    """Each word's first character and a star per other character: "John Smith" -> "J*** S****"."""
    return _WORD.sub(lambda m: m[0][0] + "*" * (len(m[0]) - 1), value)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


def _number_like(value: str) -> bool:
    """Mostly digits: MRNs, phones, SSNs, ZIPs, "E1234567", "S-1234567", "ABC123456789"."""
    alnum = [c for c in value if c.isalnum()]
    return bool(alnum) and sum(c.isdigit() for c in alnum) * 2 >= len(alnum)


@dataclass
class _Entry:
    anywhere: Identifier | None = None  # the first identifier of this key that matches anywhere
    by_record: dict[str, Identifier] = field(default_factory=dict)

    def get(self, record: str | None) -> Identifier | None:
        if self.anywhere is not None and self.anywhere.source == "canary":
            return self.anywhere
        return (self.by_record.get(record) if record is not None else None) or self.anywhere


class Identifiers:
    """Every identifier as lookup keys: word n-grams ("maria lopez") and digit strings ("6172841234").

    A key maps to the identifiers it stands for, either anywhere or per record id; scanning a
    text costs one set lookup per word (n-grams are tried only from words that start a key)
    and per digit-group run, so 10,000 records take seconds.
    """

    def __init__(self, config: Guard, stop: frozenset[str] = frozenset()):
        self.config = config
        self.stop = frozenset(STOP_WORDS) | stop
        self.text: dict[str, _Entry] = {}
        self.digits: dict[str, _Entry] = {}
        self.first: dict[str, set[int]] = {}  # first word of a text key -> key lengths in words
        self.checked: Counter = Counter()  # (source, entity) -> identifiers indexed
        self.skipped: Counter = Counter()  # reason -> identifiers never matched

    def __len__(self) -> int:
        return sum(self.checked.values())

    def _put(self, table: dict[str, _Entry], key: str, ident: Identifier, anywhere: bool) -> None:
        entry = table.setdefault(key, _Entry())
        if anywhere or ident.record is None:
            if entry.anywhere is None or ident.source == "canary" or (entry.anywhere.guess and not ident.guess):
                entry.anywhere = ident
        else:
            entry.by_record.setdefault(ident.record, ident)
        if table is self.text:
            words = key.split(" ")
            self.first.setdefault(words[0], set()).add(len(words))

    def _put_words(self, words: list[str], ident: Identifier, anywhere: bool) -> bool:
        if not words or (len(words) == 1 and (len(words[0]) < 2 or words[0] in self.stop)):
            return False
        self._put(self.text, " ".join(words), ident, anywhere)
        return True

    def add(self, value: str, entity: str, source: str, record: str | None, guess: bool = False) -> None:
        """Index one identifier by its type and shape (see the module docstring for the rules);
        `guess`: an NER guess, which in UPPER CASE (no capitals to go by) stays in its own record."""
        value = value.strip()
        ident = Identifier(value, entity, source, record, guess)
        words, digits = _words(value), _digits(value)
        cfg = self.config
        indexed = False
        if source == "canary":  # fake and unique by construction: anywhere, as words and as a number
            indexed = self._put_words(words, ident, True)
            if entity in NAMES:  # an invented name: "Mr. Drapolsa" is the canary too
                for word in words:
                    self._put_words([word], ident, True)
            if len(digits) >= cfg.min_digits:
                self._put(self.digits, digits, ident, True)
                indexed = True
        elif entity in SKIPPED:
            self.skipped["age"] += 1
            return
        elif entity in DATES and (_YEAR.search(value) or not _number_like(value)):  # else a digit run
            if not _YEAR.search(value):
                self.skipped["date_without_year"] += 1
                return
            indexed = self._put_words(words, ident, False)  # shifted dates of other records look alike
        elif entity not in ALWAYS_ANYWHERE and _number_like(value):
            if len(digits) < cfg.min_digits:
                self.skipped["small_number"] += 1
                return
            self._put(self.digits, digits, ident, len(digits) >= cfg.min_digits_anywhere)
            if value.startswith("+") and (code := re.match(r"\+\d{1,3}", value)):  # also without the country code
                rest = digits[len(code[0]) - 1:]
                if len(rest) >= cfg.min_digits:
                    self._put(self.digits, rest, ident, len(rest) >= cfg.min_digits_anywhere)
            indexed = True
        else:
            content = [w for w in words if len(w) > 1 and w not in self.stop]
            specific = len(content) >= 2 and not (guess and value.isupper())
            indexed = self._put_words(words, ident, entity in ALWAYS_ANYWHERE or specific)
            if entity in NAMES and len(words) > 1:  # "Mrs. Lopez" in a rationale: each name, in its record
                for part in value.split():  # "Sung-min" stays one name ("sung min"), never "min"
                    part_words = _words(part)
                    if len(part_words) > 1 or (part_words and part_words[0] in content):
                        indexed |= self._put_words(part_words, ident, False)
        if indexed:
            self.checked[source, entity] += 1
        else:
            self.skipped["stop_word_or_short"] += 1

    def find(self, text: str) -> Iterator[tuple[str, _Entry]]:
        """(key, entry) for every identifier key in `text`: word n-grams, then digit runs."""
        words = _words(text)
        for i, word in enumerate(words):
            for n in self.first.get(word, ()):
                key = " ".join(words[i:i + n]) if n > 1 else word
                if key in self.text:
                    yield key, self.text[key]
        if not self.digits:
            return
        for run in _NUMBER.finditer(text):
            groups = _GROUP.findall(run[0])
            for i in range(len(groups)):
                acc = ""
                for group in groups[i:i + MAX_GROUPS]:
                    acc += group
                    if len(acc) >= self.config.min_digits and acc in self.digits:
                        yield acc, self.digits[acc]

    def keys(self, text: str) -> set[str]:
        return {key for key, _ in self.find(text)}


# -- building the identifiers ----------------------------------------------------------------

def read_canaries(path: Path) -> tuple[list[dict], list[str]]:
    """canaries.json's ("canaries", "literals"); a missing file means none."""
    if not path.is_file():
        return [], []
    data = json.loads(path.read_text(encoding="utf-8"))
    return list(data.get("canaries", [])), [str(v) for v in data.get("literals", [])]


def raw_records(domain: Domain, params: Params, root: Path) -> tuple[list[dict], list[list[tuple[str, str]]]]:
    """The records deidentify reads (same ids), and per record the raw row's (`phi_types`, `phi`) pairs."""
    source = params.domain(domain.name).source
    rows = list(read_rows(domain, source, root))
    records = to_records(domain, rows, source.fields or domain.fields, params.deidentify.max_chars, Ledger("guard"))
    by_position = {position: row for position, row, _ in rows}
    planted = []
    for record in records:
        row = by_position[int(record["id"].rsplit("-", 1)[1])] or {}
        phi = row.get("phi") if isinstance(row.get("phi"), list) else []
        types = row.get("phi_types") if isinstance(row.get("phi_types"), list) else ["UNKNOWN"] * len(phi)
        planted.append([(str(t), v) for t, v in zip(types, phi) if isinstance(v, str) and v.strip()])
    return records, planted


def build_identifiers(domain: Domain, params: Params, root: Path) -> tuple[Identifiers, dict[str, str]]:
    """Every identifier that entered the pipeline, and per record id its raw text with the spans
    de-identification replaces blanked (what it left); both in memory only."""
    config = params.guard
    ids = Identifiers(config, deidentify.allow_list(domain))
    canaries, literals = read_canaries(stage_dir(root, domain.name, "deidentify") / "canaries.json")
    for canary in canaries:
        ids.add(str(canary["value"]), str(canary.get("entity", "CANARY")), "canary", canary.get("id"))
    for literal in literals:
        ids.add(literal, "CANARY", "canary", None)
    records, planted = raw_records(domain, params, root)
    for record, values in zip(records, planted, strict=True):
        for entity, value in values:
            ids.add(value, entity, "planted", record["id"])
    left = {r["id"]: r["text"] for r in records}
    if config.redetect:
        texts = [r["text"] for r in records]
        spans_per_text = deidentify.detect_all(domain, texts, params.deidentify, Counter())  # as deidentify does
        for record, spans in zip(records, spans_per_text, strict=True):
            text = record["text"]
            for span in spans:
                ids.add(text[span.start:span.end], span.entity, "detected", record["id"], guess=not span.pattern)
            left[record["id"]] = _blank(text, [(s.start, s.end) for s in spans])
    return ids, left


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with each span replaced by a line break (so no word or number runs across it)."""
    out, at = [], 0
    for start, end in sorted(spans):
        out.append(text[at:start] + "\n")
        at = max(at, end)
    return "".join(out) + text[at:]


# -- scanning ----------------------------------------------------------------------------------

def _strings(value, path: str) -> Iterator[tuple[str, str]]:
    """(field path, string) for every string inside a JSON value."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            if path or key not in SCHEMA_FIELDS:
                yield from _strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")


def _is_text(path: Path) -> bool:
    if path.suffix.lower() in BINARY_SUFFIXES:
        return False
    with open(path, "rb") as f:
        return b"\0" not in f.read(8192)


class Scanner:
    """Matches identifiers in files, excusing surrogates the de-identifier wrote into a record."""

    def __init__(self, identifiers: Identifiers, raw_left: dict[str, str] | None = None,
                 deidentified: dict[str, str] | None = None):
        self.ids = identifiers
        self.raw_left = raw_left or {}  # raw text per record with the spans de-identification replaces blanked
        self.deidentified = deidentified or {}
        self._keys: dict[tuple[str, str], set[str]] = {}

    def _keys_of(self, kind: str, record: str) -> set[str] | None:
        texts = self.raw_left if kind == "raw_left" else self.deidentified
        if record not in texts:
            return None
        if (kind, record) not in self._keys:
            self._keys[kind, record] = self.ids.keys(texts[record])
        return self._keys[kind, record]

    def excused(self, key: str, record: str) -> bool:
        """True when `key` is in the record's de-identified text yet nowhere in what de-identification
        left of its raw text: the de-identifier wrote it (a surrogate), the record never held it."""
        clean, left = self._keys_of("clean", record), self._keys_of("raw_left", record)
        return clean is not None and left is not None and key in clean and key not in left

    def left_alone(self, key: str, record: str) -> bool:
        """True when the record's own raw text holds `key` and de-identification, judging it there,
        left it: another record's NER guess ("Harvard Pilgrim" as a person) does not overrule that."""
        left = self._keys_of("raw_left", record)
        return left is not None and key in left

    def text(self, text: str, record: str | None) -> list[Identifier]:
        """The identifiers in `text` that count as leaks there (once per key)."""
        found, seen = [], set()
        for key, entry in self.ids.find(text):
            ident = entry.get(record)
            if ident is None or ident in seen:
                continue
            if ident.source != "canary" and record is not None and self.excused(key, record):
                continue
            if ident.guess and record is not None and ident.record != record and self.left_alone(key, record):
                continue
            seen.add(ident)
            found.append(ident)
        return found

    def file(self, path: Path, name: str) -> tuple[int, list[Leak]]:
        """(rows or lines read, leaks) for one file; jsonl rows with an "id" are matched per record."""
        leaks, n = [], 0
        jsonl = path.suffix == ".jsonl"
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                row = None
                if jsonl and line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        row = None
                if isinstance(row, dict):
                    record = row["id"] if isinstance(row.get("id"), str) else None
                    for path_, value in _strings(row, ""):
                        leaks += [Leak(name, record, path_, i.entity, i.source, mask(i.value))
                                  for i in self.text(value, record)]
                else:
                    leaks += [Leak(name, None, f"line {n}", i.entity, i.source, mask(i.value))
                              for i in self.text(line, None)]
        return n, leaks


def scan_paths(paths: Iterable[tuple[Path, str]], identifiers: Identifiers, raw_left: dict[str, str] | None = None,
               deidentified: dict[str, str] | None = None, verified: set[str] = frozenset(),
               ) -> tuple[dict[str, dict], list[Leak]]:
    """Scan (path, name in the report) pairs; folders are walked for text files. Returns per-file
    counts and SHA-256, and every leak; files whose SHA-256 is in `verified` are reported as such,
    not read again. `raw_left` / `deidentified` (text per record id) excuse surrogates."""
    scanner = Scanner(identifiers, raw_left, deidentified)
    files, leaks = {}, []
    for path, name in paths:
        if not path.exists():
            files[name] = {"missing": True}
            continue
        targets = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for target in targets:
            label = name if target == path else f"{name}/{target.relative_to(path).as_posix()}"
            if target.name.startswith(".") or target.name in NOT_SCANNED or not _is_text(target):
                continue
            digest = _sha256(target)
            if digest in verified:
                files[label] = {"verified": True, "sha256": digest}
                continue
            n, found = scanner.file(target, label)
            files[label] = {"lines": n, "leaks": len(found), "sha256": digest}
            leaks += found
    return files, leaks


def targets(root: Path, domain: str) -> list[tuple[Path, str]]:
    """What the guard stage checks: stage outputs, the synthesis cache, the stage logs."""
    data = Path(root) / "data" / domain
    out = [(data / name, f"data/{domain}/{name}") for name in STAGE_DIRS]
    for folder in (Path(root) / ".cache" / "synthesize" / domain, Path(root) / "logs" / domain):
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.is_file() and path.name != "guard.log":  # the guard's own log is being written
                    out.append((path, path.relative_to(root).as_posix()))
    return out


def _deidentified(root: Path, domain: str) -> dict[str, str]:
    texts = {}
    for split in ("train", "test"):
        path = stage_dir(root, domain, "deidentify") / f"{split}.jsonl"
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        row = json.loads(line)
                        texts[row["id"]] = row["text"]
    return texts


def _fail(where: str, files: dict[str, dict], leaks: list[Leak]) -> LeakError:
    by_file = Counter(leak.file for leak in leaks)
    by_source = Counter(leak.source for leak in leaks)
    message = (f"{where}: {len(leaks)} identifier(s) leaked {dict(by_source)} in {len(by_file)} file(s): "
               + ", ".join(f"{name} ({n})" for name, n in by_file.most_common()))
    LOG.error(message)
    return LeakError(message, leaks)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verified_hashes(report: dict) -> set[str]:
    """SHA-256 of the files a passed guard report scanned and found clean."""
    if not report.get("passed"):
        return set()
    return {f["sha256"] for f in report.get("files", {}).values() if f.get("sha256") and not f.get("leaks")}


def check_tree(tree: Path, domain: Domain | str, params: Params, root: Path, verified: set[str] = frozenset()) -> dict:
    """Scan every text file under `tree` (e.g. an MLflow run's artifacts, before a model version
    is created) for the identifiers of `domain`'s pipeline; raise `LeakError` on any leak.

    `verified`: SHA-256 of files the guard stage already passed (`verified_hashes`); those are
    skipped, and with any given the rest are checked without re-detection (see the docstring).
    """
    domain = get_domain(domain) if isinstance(domain, str) else domain
    tree = Path(tree)
    if verified:
        params = params.model_copy(update={"guard": params.guard.model_copy(update={"redetect": False})})
    identifiers, _ = build_identifiers(domain, params, Path(root))
    files, leaks = scan_paths([(tree, tree.name)], identifiers, verified=verified)
    if leaks:
        raise _fail(f"guard@{domain.name} ({tree})", files, leaks)
    skipped = sum(1 for f in files.values() if f.get("verified"))
    return {"files": len(files) - skipped, "verified": skipped, "identifiers": len(identifiers),
            "redetect": params.guard.redetect, "leaks": 0}


# -- the stage -------------------------------------------------------------------------------

def run(domain: Domain, params: Params, root: Path) -> dict:
    """The report: identifiers built in memory, every target scanned; no files written."""
    started = time.perf_counter()
    identifiers, raw = build_identifiers(domain, params, root)
    built = time.perf_counter()
    files, leaks = scan_paths(targets(root, domain.name), identifiers, raw, _deidentified(root, domain.name))
    checked: dict[str, dict[str, int]] = {}
    for (source, entity), n in sorted(identifiers.checked.items()):
        checked.setdefault(source, {})[entity] = n
    lines = sum(f.get("lines", 0) for f in files.values())
    return {
        "domain": domain.name,
        "passed": not leaks,
        "n_leaks": len(leaks),
        "leaks_by_file": dict(Counter(leak.file for leak in leaks)),
        "leaks": [asdict(leak) for leak in leaks[:params.guard.max_leaks_reported]],
        "files": files,
        "missing": [f"data/{domain.name}/{name}" for name in EXPECTED
                    if not (root / "data" / domain.name / name).exists()],
        "records": len(raw),
        "identifiers": checked,
        "skipped": dict(sorted(identifiers.skipped.items())),
        "redetect": params.guard.redetect,
        "seconds_identifiers": round(built - started, 3),
        "seconds_scan": round(time.perf_counter() - built, 3),
        "lines": lines,
    }


def main(domain: str, params: Params, root: Path) -> dict:
    """Stage entry point: write the report, then raise `LeakError` if anything leaked."""
    report = run(get_domain(domain), params, Path(root))
    out = stage_dir(root, domain, "guard") / "report.json"
    write_json(out, report)
    if not report["passed"]:
        leaks = [Leak(**leak) for leak in report["leaks"]]
        raise _fail(f"guard@{domain}", report["files"], leaks) from None
    if report["missing"]:
        LOG.warning("guard@%s: %d expected file(s) missing: %s", domain, len(report["missing"]), report["missing"])
    return {"passed": True, "records": report["records"], "files": len(report["files"]),
            "identifiers": sum(sum(v.values()) for v in report["identifiers"].values()),
            "seconds": report["seconds_identifiers"] + report["seconds_scan"]}
