"""Teacher rationale synthesis: distilling step-by-step (Hsieh et al., 2023, arXiv:2305.02301).

    stillhouse stage synthesize --domain healthcare      # what dvc.yaml runs

The teacher reads each de-identified record through the domain's `teacher.txt` template and
writes a short chain-of-thought rationale ending in `Answer: <label>` (greedy decoding, in
length-sorted batches). As in the paper, a rationale is kept only when the teacher's parsed
answer equals the gold label; otherwise the row keeps `rationale: None`. No record is ever
dropped: unparseable outputs are rows with `kept: False`, and a ledger asserts rows in = out.

Inputs:  data/<domain>/deidentify/{train,test}.jsonl
Outputs: data/<domain>/synthesize/{train,test}.jsonl — each input record plus
           teacher_output  the teacher's full completion
           teacher_answer  domain.parse_answer(teacher_output): canonical label or None
           rationale       text before the final "Answer:" when teacher_answer == label, else None
           kept            (train) rationale is not None: the row trains the rationale task
           correct         (test) teacher_answer == label: the teacher's held-out accuracy
         data/<domain>/synthesize/report.json — teacher, template hash, settings, counts per
           split (kept / wrong answer / unparseable / no rationale), teacher accuracy, tokens, speed.
Params:  synthesize.teacher, batch_size, max_new_tokens, dtype.

Resuming: every finished batch is appended (one write, fsynced) to
`.cache/synthesize/<domain>/<key>.jsonl` beside `data/`, where key hashes the teacher (spec
and a fingerprint of its weights), the templates and the generation settings. A rerun reuses
every cached result whose record id and prompt hash match and generates only the rest; the
teacher is loaded only if something is missing. A run killed mid-write leaves at most a
truncated last line, which is cut off on the next start. The cache is not a DVC output: DVC
deletes a stage's outputs before rerunning it, and this folder must survive that.
Batched greedy text can differ slightly from unbatched text (padding changes bf16 numerics),
so a resumed run may differ from an uninterrupted one in records regenerated in other batches.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from tqdm.auto import tqdm

from domains import get_domain
from domains.base import Domain
from tasks import models
from tasks.params import Params, Synthesize, stage_dir
from tasks.records import Ledger, read_jsonl, write_json, write_jsonl

PARAMS = ("synthesize",)  # the params.yaml keys this stage reads (dvc.yaml lists the same)
SPLITS = ("train", "test")
ANSWER = "Answer:"  # the marker the templates ask for and the domains' parse_answer reads
# kept: correct answer with a rationale; no_rationale: correct answer, but nothing before it or
# only a copy of the prompt; wrong_answer: parsed, not the label; unparseable: no answer found.
OUTCOMES = ("kept", "wrong_answer", "unparseable", "no_rationale")


# ---------------------------------------------------------------------------------------------
# Row transform (pure): record -> prompt, (record, teacher text) -> row


def format_input(domain: Domain, tok, record: dict) -> str:
    """The chat-formatted teacher prompt for one record."""
    return models.chat_prompt(tok, domain.teacher_prompt(record))


def gold_label(domain: Domain, record: dict) -> str:
    """The record's label in the canonical form `parse_answer` returns."""
    label = domain.normalize_label(str(record["label"]))
    return label if label is not None else str(record["label"])


def split_rationale(text: str, prompt: str = "") -> str | None:
    """The text before the final `Answer:` (the whole text when there is none); None if empty.

    Markdown around the marker (`**Answer:**`, `### Answer:`) and a dangling "Final" go too.
    A rationale that only copies the prompt (small teachers echo the instruction, e.g.
    `Solve it step by step ..., then write the final line as "Answer: 12"`) is no rationale.
    """
    head = text.rsplit(ANSWER, 1)[0] if ANSWER in text else text
    head = head.rstrip().rstrip("*#_ \t\n")
    if head.lower().endswith("final"):
        head = head[: -len("final")].rstrip().rstrip("*#_ \t\n")
    head = head.strip()
    if not head or head.strip(" \"'`:") in prompt:
        return None
    return head


def judge(domain: Domain, record: dict, text: str) -> dict:
    """Parse the teacher's answer; keep the rationale only when the answer equals the gold label."""
    answer = domain.parse_answer(text)
    correct = answer is not None and answer == gold_label(domain, record)
    return {
        "teacher_output": text,
        "teacher_answer": answer,
        "correct": correct,
        "rationale": split_rationale(text, domain.teacher_prompt(record)) if correct else None,
    }


def format_output(domain: Domain, record: dict, text: str, split: str = "train") -> dict:
    """One output row: the record plus the judged teacher output, with the split's keys.

    train rows add teacher_output, teacher_answer, rationale, kept;
    test rows add teacher_output, teacher_answer, rationale, correct.
    """
    judged = judge(domain, record, text)
    row = {**record, **{k: judged[k] for k in ("teacher_output", "teacher_answer", "rationale")}}
    if split == "test":
        row["correct"] = judged["correct"]
    else:
        row["kept"] = judged["rationale"] is not None
    return row


def outcome(domain: Domain, row: dict) -> str:
    """Which of OUTCOMES a row counts as (exactly one)."""
    if row["rationale"] is not None:
        return "kept"
    if row["teacher_answer"] is None:
        return "unparseable"
    return "no_rationale" if row["teacher_answer"] == gold_label(domain, row) else "wrong_answer"


def split_report(domain: Domain, rows: list[dict], results: list[dict]) -> dict:
    """Counts, teacher accuracy, tokens and speed for one split (`results`: the cache entries)."""
    counts = {name: 0 for name in OUTCOMES}
    for row in rows:
        counts[outcome(domain, row)] += 1
    n = len(rows)
    completion = sum(r["completion_tokens"] for r in results)
    seconds = sum(r["seconds"] for r in results)
    return {
        "records": n,
        **counts,
        "kept_share": counts["kept"] / n if n else 0.0,
        "teacher_accuracy": (counts["kept"] + counts["no_rationale"]) / n if n else 0.0,
        "prompt_tokens": sum(r["prompt_tokens"] for r in results),
        "completion_tokens": completion,
        "seconds": round(seconds, 3),  # generation time of these results, whichever run made them
        "completion_tokens_per_s": round(completion / seconds, 1) if seconds else None,
    }


# ---------------------------------------------------------------------------------------------
# Keys and the resumable result cache


def templates_hash(domain: Domain) -> str:
    """sha256 over the domain's template folder (question.txt and teacher.txt): names and bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in domain.templates.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def generation_settings(params: Synthesize) -> dict:
    return {
        "batch_size": params.batch_size,
        "max_new_tokens": params.max_new_tokens,
        "dtype": params.dtype,
        "greedy": True,
    }


def cache_key(teacher: str, fingerprint: str, templates: str, settings: dict) -> str:
    """What a cached teacher output depends on, besides its prompt."""
    blob = json.dumps(
        {"teacher": teacher, "fingerprint": fingerprint, "templates": templates, "settings": settings}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


class ResultCache:
    """Append-only JSON lines of finished teacher outputs, looked up by (record id, prompt hash).

    An entry: {id, prompt_hash, text, prompt_tokens, completion_tokens, seconds, generated_at}.
    """

    FIELDS = frozenset({"id", "prompt_hash", "text", "prompt_tokens", "completion_tokens", "seconds"})

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.skipped_lines = 0  # unreadable lines met by the last load()

    def load(self) -> dict[tuple[str, str], dict]:
        """Every complete entry (the first one wins); cuts off a truncated last line in place."""
        self.skipped_lines = 0
        if not self.path.is_file():
            return {}
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a run killed mid-write: drop the partial line so appends stay clean
            self.skipped_lines += 1
            with open(self.path, "r+b") as f:
                f.truncate(end)
        entries: dict[tuple[str, str], dict] = {}
        for line in data[:end].splitlines():
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                entry = None
            if not isinstance(entry, dict) or not self.FIELDS <= entry.keys():
                self.skipped_lines += bool(line.strip())
                continue
            entries.setdefault((entry["id"], entry["prompt_hash"]), entry)
        return entries

    def append(self, entries: list[dict]) -> None:
        """One write per batch, flushed to disk before the next batch starts."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
            f.flush()
            os.fsync(f.fileno())


def cache_path(root: str | Path, domain: str, key: str) -> Path:
    """`.cache/synthesize/<domain>/<key>.jsonl` beside `data/` (git-ignored, not a DVC output)."""
    return Path(root) / ".cache" / "synthesize" / domain / f"{key}.jsonl"


# ---------------------------------------------------------------------------------------------
# The stage


def run(
    splits: dict[str, list[dict]],
    domain: Domain,
    params: Synthesize,
    teacher_path: str,
    tok,
    cache: ResultCache,
) -> tuple[dict[str, list[dict]], dict]:
    """Rows per split (same order and count as `splits`) and run statistics.

    Generates only the records whose (id, prompt hash) the cache lacks, in length-sorted
    batches of `params.batch_size`, appending each finished batch to the cache.
    """
    prompts = {split: [format_input(domain, tok, r) for r in records] for split, records in splits.items()}
    keys = {split: [(str(r["id"]), prompt_hash(p)) for r, p in zip(splits[split], prompts[split])] for split in splits}
    done = cache.load()
    todo: dict[tuple[str, str], str] = {}
    for split in splits:
        for key, prompt in zip(keys[split], prompts[split]):
            if key not in done:
                todo.setdefault(key, prompt)
    reused = sum(key in done for split in splits for key in keys[split])

    device, seconds = None, 0.0
    if todo:
        model = models.load_causal_lm(teacher_path, params.dtype)
        device = str(model.device)
        pending = sorted(todo.items(), key=lambda kv: len(kv[1]))  # little padding per batch
        bar = tqdm(total=len(pending), desc=f"synthesize {domain.name}", unit="rec")
        for start in range(0, len(pending), params.batch_size):
            batch = pending[start : start + params.batch_size]
            t0 = time.perf_counter()
            outputs = models.generate(
                model,
                tok,
                [prompt for _, prompt in batch],
                batch_size=params.batch_size,
                max_new_tokens=params.max_new_tokens,
                desc="batch",
            )
            dt = time.perf_counter() - t0
            seconds += dt
            entries = [
                {
                    "id": key[0],
                    "prompt_hash": key[1],
                    "text": out["text"],
                    "prompt_tokens": out["prompt_tokens"],
                    "completion_tokens": out["completion_tokens"],
                    "seconds": dt / len(batch),
                    "generated_at": time.time(),
                }
                for (key, _), out in zip(batch, outputs)
            ]
            cache.append(entries)
            done.update({(e["id"], e["prompt_hash"]): e for e in entries})
            bar.update(len(batch))
        bar.close()

    rows, results = {}, {}
    for split, records in splits.items():
        results[split] = [done[key] for key in keys[split]]
        rows[split] = [format_output(domain, r, e["text"], split) for r, e in zip(records, results[split])]
    stats = {
        "splits": {split: split_report(domain, rows[split], results[split]) for split in splits},
        "this_run": {
            "generated": len(todo),
            "reused": reused,
            "generation_seconds": round(seconds, 3),
            "device": device,
            "cache_lines_skipped": cache.skipped_lines,
        },
    }
    return rows, stats


def main(domain: str, params: Params, root: Path) -> dict:
    """Read the de-identified splits, synthesize, write rows and report.json; return a summary."""
    started = time.perf_counter()
    spec = params.synthesize
    dom = get_domain(domain)
    src, out = stage_dir(root, domain, "deidentify"), stage_dir(root, domain, "synthesize")
    splits = {split: read_jsonl(src / f"{split}.jsonl") for split in SPLITS}

    teacher_path = models.resolve_model(spec.teacher)  # converted once; later runs find the folder
    tok = models.load_tokenizer(teacher_path)
    fingerprint = models.model_fingerprint(spec.teacher)
    templates = templates_hash(dom)
    settings = generation_settings(spec)
    key = cache_key(spec.teacher, fingerprint, templates, settings)
    cache = ResultCache(cache_path(root, domain, key))

    rows, stats = run(splits, dom, spec, teacher_path, tok, cache)

    ledgers = {}
    for split in SPLITS:
        ledger = Ledger(stage=f"synthesize/{split}", n_in=len(splits[split]))
        ledger.n_out = write_jsonl(out / f"{split}.jsonl", rows[split])
        ledgers[split] = ledger.summary()  # asserts records in = out (synthesis drops nothing)
    completion = sum(s["completion_tokens"] for s in stats["splits"].values())
    gen_seconds = sum(s["seconds"] for s in stats["splits"].values())
    report = {
        "domain": domain,
        "teacher": {"spec": spec.teacher, "path": teacher_path, "fingerprint": fingerprint},
        "templates_sha256": templates,
        "generation": settings,
        "cache": {"key": key, "path": os.path.relpath(cache.path, root)},
        **stats,
        "total": {
            "records": sum(len(r) for r in rows.values()),
            "kept": sum(s["kept"] for s in stats["splits"].values()),
            "prompt_tokens": sum(s["prompt_tokens"] for s in stats["splits"].values()),
            "completion_tokens": completion,
            "seconds": round(gen_seconds, 3),
            "completion_tokens_per_s": round(completion / gen_seconds, 1) if gen_seconds else None,
        },
        "ledger": ledgers,
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    write_json(out / "report.json", report)
    return {
        **{split: {k: stats["splits"][split][k] for k in ("records", "kept", "teacher_accuracy")} for split in SPLITS},
        "generated": stats["this_run"]["generated"],
        "reused": stats["this_run"]["reused"],
    }
