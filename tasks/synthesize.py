"""Teacher rationale synthesis: distilling step-by-step (Hsieh et al., 2023, arXiv:2305.02301).

    stillhouse stage synthesize --domain healthcare      # what dvc.yaml runs

Each teacher (tasks/teachers/: a local transformers model, an OpenAI-compatible HTTP server,
or replayed precomputed outputs) reads each de-identified record through the domain's
`teacher.txt` template and writes a short chain-of-thought rationale ending in
`Answer: <label>`, `samples` times (greedy when 1), in length-sorted batches. The answers of all
samples of all teachers are put to a weighted vote (self-consistency, Wang et al., 2023); the
winning answer's best sample is the row's text. As in the paper, a rationale is kept only when
that answer equals the gold label. With `star`, train records no teacher got right get one
label-hinted try (STaR rationalization, Zelikman et al., 2022), kept only when it reaches the
label without mentioning the hint, and marked `star: true`. No record is ever dropped:
unparseable outputs are rows with `kept: False`, and a ledger asserts rows in = out.

Inputs:  data/<domain>/deidentify/{train,test}.jsonl
Outputs: data/<domain>/synthesize/{train,test}.jsonl — each input record plus
           teacher_output  the chosen completion
           teacher_answer  domain.parse_answer(teacher_output): canonical label or None
           rationale       text before the final "Answer:" when teacher_answer == label, else None
           kept            (train) rationale is not None: the row trains the rationale task
           correct         (test) teacher_answer == label: the teacher's held-out accuracy
           teacher         the teacher whose sample was chosen
           agreement       the winning answer's share of all vote weight (1.0: unanimous)
           teacher_votes   {answer: weight}
           teacher_confidence  P(answer tokens after "Answer:") of the chosen sample, or None
           teacher_entropy     its mean per-token entropy (nats), or None (replay; HTTP without logprobs)
           star            the rationale is a label-hinted rationalization (train only)
           teacher_topk    (only with topk_logprobs > 0) {"ids", "logprobs"}: k per completion
                           token, for a teacher sharing the student's vocabulary; else None
         data/<domain>/synthesize/report.json — teachers (tokens, cost, generated / reused,
           HTTP retries by cause), template hash, settings, counts per split (kept / wrong
           answer / unparseable / no rationale), agreement, STaR, teacher accuracy, speed.
Params:  synthesize.* (teacher, teachers, batch_size, max_batch_tokens, max_new_tokens, dtype,
         samples, temperature, seed, star, confidence, topk_logprobs, concurrency, retries, timeout).

Resuming: every finished batch is appended (one write, fsynced) to
`.cache/synthesize/<domain>/<key>.jsonl` beside `data/`, one file per teacher, where key hashes
the teacher (name and a fingerprint of its weights / server model / replay file), the
templates and its generation settings (sampling, batch settings, dtype, device). Entries are
looked up by (record id, prompt hash). A rerun reuses every cached result and generates only
the rest; a local teacher is loaded only if something is missing. A run killed mid-write leaves
at most a truncated last line, which is cut off on the next start. The cache is not a DVC
output: DVC deletes a stage's outputs before rerunning it, and this folder must survive that.
Batched greedy text can differ slightly from unbatched text (padding changes bf16 numerics),
so a resumed run may differ from an uninterrupted one in records regenerated in other batches.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from domains import get_domain
from domains.base import Domain
from tasks import models, teachers
from tasks.params import Params, Synthesize, stage_dir
from tasks.teachers import TeacherError
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
    """The run-level settings, as report.json shows them (each teacher adds its own to its cache key)."""
    return {
        "batch_size": params.batch_size,
        "max_batch_tokens": params.max_batch_tokens,
        "max_new_tokens": params.max_new_tokens,
        "dtype": params.dtype,
        "greedy": params.temperature == 0,
        "samples": params.samples,
        "temperature": params.temperature,
        "seed": params.seed,
        "star": params.star,
        "confidence": params.confidence,
        "topk_logprobs": params.topk_logprobs,
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
        with open(self.path, "r+b") as f:
            # shards of one synthesis append to this file at once: a line being written is not a torn one
            fcntl.flock(f, fcntl.LOCK_EX)
            data = f.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):  # a run killed mid-write: drop the partial line so appends stay clean
                self.skipped_lines += 1
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
            fcntl.flock(f, fcntl.LOCK_EX)  # concurrent shards (flows/pipeline.py `shards`); released on close
            f.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
            f.flush()
            os.fsync(f.fileno())


def cache_path(root: str | Path, domain: str, key: str) -> Path:
    """`.cache/synthesize/<domain>/<key>.jsonl` beside `data/` (git-ignored, not a DVC output)."""
    return Path(root) / ".cache" / "synthesize" / domain / f"{key}.jsonl"


# ---------------------------------------------------------------------------------------------
# Quality controls (pure): self-consistency vote over teachers and samples, STaR prompts


def entry_samples(entry: dict) -> list[dict]:
    """A cache entry's samples (entries written before sampling existed hold one `text`)."""
    return entry.get("samples") or [{"text": entry["text"], "completion_tokens": entry["completion_tokens"]}]


def vote(domain: Domain, record: dict, candidates: list[tuple[str, float, dict]]) -> dict:
    """Weighted majority vote over `(teacher name, weight, sample)` candidates (self-consistency).

    The answer with the most weight wins (ties: the one met first, i.e. the first teacher's);
    among its samples the first with a rationale and the highest answer log-prob is the text.
    Returns {"sample", "teacher", "agreement" (winner's share of all weight, 0 when nothing
    parsed), "votes" ({answer: weight})}.
    """
    tally: dict[str, float] = {}
    answers = []
    for _, weight, sample in candidates:
        answer = domain.parse_answer(sample["text"])
        answers.append(answer)
        if answer is not None:
            tally[answer] = tally.get(answer, 0.0) + weight
    total = sum(w for _, w, _ in candidates)
    if not tally:
        name, _, sample = candidates[0]
        return {"sample": sample, "teacher": name, "agreement": 0.0, "votes": {}}
    winner = max(tally, key=tally.get)  # max keeps the first of equal weights: dicts keep insertion order
    prompt = domain.teacher_prompt(record)

    def rank(i: int):
        sample = candidates[i][2]
        lp = sample.get("answer_logprob")
        return (split_rationale(sample["text"], prompt) is not None, lp if lp is not None else float("-inf"), -i)

    best = max((i for i, a in enumerate(answers) if a == winner), key=rank)
    return {"sample": candidates[best][2], "teacher": candidates[best][0],
            "agreement": round(tally[winner] / total, 4), "votes": {a: round(w, 4) for a, w in tally.items()}}


STAR_HINT = (
    "\n(The correct answer is {label}. Explain the reasoning that leads to it in two or three short "
    "sentences without mentioning that you were told, then write the final line as \"Answer: {label}\".)"
)


def star_prompt(domain: Domain, record: dict) -> str:
    """Label-hinted rationalization (STaR, Zelikman et al., 2022): the teacher prompt plus the gold answer."""
    return domain.teacher_prompt(record) + STAR_HINT.format(label=gold_label(domain, record))


def star_rationale(domain: Domain, record: dict, text: str) -> bool:
    """A rationalization counts when it reaches the gold answer, says something, and hides the hint."""
    if domain.parse_answer(text) != gold_label(domain, record):
        return False
    rationale = split_rationale(text, star_prompt(domain, record))
    return rationale is not None and not any(w in rationale.lower() for w in ("hint", "were told", "correct answer is"))


def row_extras(domain: Domain, voted: dict, star: bool, topk: bool = False, shares_vocab: bool = False) -> dict:
    """What rows add beyond the contract's fields: source teacher, agreement, confidence, STaR flag."""
    sample = voted["sample"]
    lp = sample.get("answer_logprob")
    extras = {
        "teacher": voted["teacher"],
        "agreement": voted["agreement"],
        "teacher_votes": voted["votes"],
        "teacher_confidence": round(math.exp(lp), 4) if lp is not None else None,  # P(answer tokens)
        "teacher_entropy": sample.get("entropy"),  # mean per-token entropy of the completion, nats
        "star": star,
    }
    if topk:  # {"ids": [[k] per token], "logprobs": [[k] per token]}; None unless the vocabulary is the student's
        extras["teacher_topk"] = sample.get("topk") if shares_vocab else None
    return extras


# ---------------------------------------------------------------------------------------------
# Generation: fill a teacher's cache for a list of requests, in length-sorted dynamic batches


def plan_batches(todo: list[tuple[str, str]], teacher, batch_size: int, max_tokens: int | None) -> list[list]:
    """Length-sorted batches of at most `batch_size` requests and `max_tokens` padded prompt tokens."""
    pending = sorted(todo, key=lambda kv: len(kv[1]))  # little padding per batch
    lengths = [teacher.tokens(p) for _, p in pending] if max_tokens else [0] * len(pending)
    batches, current, longest = [], [], 0
    for item, n in zip(pending, lengths):
        if current and (len(current) == batch_size or (max_tokens and (len(current) + 1) * max(longest, n) > max_tokens)):
            batches.append(current)
            current, longest = [], 0
        current.append(item)
        longest = max(longest, n)
    return batches + [current] if current else batches


class TeacherRun:
    """One teacher, its cache (loaded once) and its accounting for this synthesis."""

    def __init__(self, spec, teacher, templates: str, root: Path, domain: str, opts):
        self.spec, self.teacher, self.opts = spec, teacher, opts
        self.key = cache_key(teacher.name, teacher.fingerprint(), templates, teacher.settings(opts))
        self.cache = ResultCache(cache_path(root, domain, self.key))
        self.done = self.cache.load()
        self.generated = self.reused = 0
        self.seconds = 0.0

    def fill(self, requests: list[tuple[str, str]], desc: str) -> list[dict]:
        """The cache entry of every `(record id, prompt)`; generates only the missing ones."""
        keys = [(rid, prompt_hash(p)) for rid, p in requests]
        todo = dict((k, (rid, p)) for k, (rid, p) in zip(keys, requests) if k not in self.done)
        self.reused += sum(k in self.done for k in keys)
        if todo:
            batches = plan_batches(list(todo.values()), self.teacher, self.teacher.batch_size,
                                   self.teacher.max_batch_tokens)
            bar = tqdm(total=len(todo), desc=desc, unit="rec")
            for batch in batches:
                t0 = time.perf_counter()
                try:
                    results = self.teacher.generate(batch, self.opts)
                except TeacherError as e:  # keep what did finish (HTTP), then stop with the error
                    if e.partial:
                        finished = [(req, res) for req, res in zip(batch, e.partial) if res is not None]
                        self._append(finished, time.perf_counter() - t0, len(batch))
                    raise
                self._append(list(zip(batch, results)), time.perf_counter() - t0, len(batch))
                bar.update(len(batch))
            bar.close()
        return [self.done[k] for k in keys]

    def _append(self, finished: list, dt: float, batch_len: int) -> None:
        """Cache `((record id, prompt), Result)` pairs of one batch that took `dt` seconds."""
        self.seconds += dt
        entries = [
            {
                "id": rid,
                "prompt_hash": prompt_hash(prompt),
                "text": res.samples[0]["text"],
                "prompt_tokens": res.prompt_tokens,
                "completion_tokens": sum(s["completion_tokens"] for s in res.samples),
                "seconds": dt / batch_len,
                "generated_at": time.time(),
                "samples": res.samples,
            }
            for (rid, prompt), res in finished
        ]
        self.cache.append(entries)  # one fsynced write per batch: a kill loses at most this batch
        self.done.update({(e["id"], e["prompt_hash"]): e for e in entries})
        self.generated += len(entries)

    def accounting(self, entries: list[dict]) -> dict:
        """Tokens and cost of the entries this synthesis used, plus this run's generated / reused."""
        prompt = sum(e["prompt_tokens"] for e in entries)
        completion = sum(e["completion_tokens"] for e in entries)
        report = {
            "kind": self.teacher.kind,
            "weight": self.spec.weight,
            "fingerprint": self.teacher.fingerprint(),
            "cache": {"key": self.key, "path": str(self.cache.path), "lines_skipped": self.cache.skipped_lines},
            "requests": len(entries),
            "generated": self.generated,
            "reused": self.reused,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "seconds": round(sum(e["seconds"] for e in entries), 3),  # whichever run made them
            "this_run_seconds": round(self.seconds, 3),
            "usd": round(prompt * self.spec.usd_per_1m_prompt_tokens / 1e6
                         + completion * self.spec.usd_per_1m_completion_tokens / 1e6, 6),
        }
        for extra in ("calls", "missing"):  # http retries by cause; replay records with no stored output
            if hasattr(self.teacher, extra):
                report[extra] = getattr(self.teacher, extra)
        return report


# ---------------------------------------------------------------------------------------------
# The stage


def run(
    splits: dict[str, list[dict]],
    domain: Domain,
    params: Synthesize,
    runs: list[TeacherRun],
    topk_teachers: frozenset[str] = frozenset(),
) -> tuple[dict[str, list[dict]], dict]:
    """Rows per split (same order and count as `splits`) and run statistics.

    Every teacher answers every record (`samples` each, from its cache when it can); the
    weighted vote picks the answer and text; with `star`, train records no teacher got right
    (or only an empty rationale) get one label-hinted try from the first generating teacher.
    """
    entries: dict[str, dict[str, list[dict]]] = {}  # teacher -> split -> entries
    for tr in runs:
        entries[tr.teacher.name] = {}
        for split, records in splits.items():
            requests = [(str(r["id"]), tr.teacher.prompt(domain.teacher_prompt(r))) for r in records]
            entries[tr.teacher.name][split] = tr.fill(requests, f"synthesize {domain.name} {split} {tr.teacher.name}")

    rows: dict[str, list[dict]] = {}
    results: dict[str, list[dict]] = {}
    star_entries: list[dict] = []
    star_run = next((tr for tr in runs if tr.teacher.kind != "replay"), None) if params.star else None
    for split, records in splits.items():
        voted = []
        for i, record in enumerate(records):
            candidates = [(tr.teacher.name, tr.spec.weight, s) for tr in runs
                          for s in entry_samples(entries[tr.teacher.name][split][i])]
            voted.append(vote(domain, record, candidates))
        rows[split] = [format_output(domain, r, v["sample"]["text"], split) for r, v in zip(records, voted)]
        star = [False] * len(records)
        if star_run is not None and split == "train":  # never on test: the hint is the gold label
            todo = [i for i, row in enumerate(rows[split]) if row["rationale"] is None]  # wrong, unparsed or empty
            if todo:
                star_run_opts = star_run.opts
                star_run.opts = replace(star_run_opts, n=1, temperature=0.0)  # one greedy rationalization
                got = star_run.fill([(str(records[i]["id"]), star_run.teacher.prompt(star_prompt(domain, records[i])))
                                     for i in todo], f"synthesize {domain.name} STaR {star_run.teacher.name}")
                star_run.opts = star_run_opts
                star_entries += got
                for i, entry in zip(todo, got):
                    if star_rationale(domain, records[i], entry["text"]):
                        star[i] = True
                        sample = entry_samples(entry)[0]
                        voted[i] = {**voted[i], "sample": sample, "teacher": star_run.teacher.name}
                        rows[split][i] = format_output(domain, records[i], entry["text"], split)
        rows[split] = [
            {**row, **row_extras(domain, v, s, params.topk_logprobs > 0, v["teacher"] in topk_teachers)}
            for row, v, s in zip(rows[split], voted, star)
        ]
        results[split] = [
            {k: sum(entries[tr.teacher.name][split][i][k] for tr in runs)
             for k in ("prompt_tokens", "completion_tokens", "seconds")}
            for i in range(len(records))
        ]

    teachers_report = {}
    for tr in runs:
        used = [e for split in splits for e in entries[tr.teacher.name][split]]
        teachers_report[tr.teacher.name] = tr.accounting(used + (star_entries if tr is star_run else []))
    if star_run is not None:
        teachers_report[star_run.teacher.name]["star_requests"] = len(star_entries)
    stats = {
        "splits": {split: split_report(domain, rows[split], results[split]) for split in splits},
        "teachers": teachers_report,
        "quality": {
            split: {
                "star_kept": sum(r.get("star", False) and r["rationale"] is not None for r in rows[split]),
                "mean_agreement": round(sum(r["agreement"] for r in rows[split]) / len(rows[split]), 4)
                if rows[split] else None,
                "unanimous": sum(r["agreement"] == 1.0 for r in rows[split]),
            }
            for split in splits
        },
        "this_run": {
            "generated": sum(tr.generated for tr in runs),
            "reused": sum(tr.reused for tr in runs),
            "generation_seconds": round(sum(tr.seconds for tr in runs), 3),
            "device": next((getattr(tr.teacher, "device", None) for tr in runs if tr.generated), None),
            "cache_lines_skipped": sum(tr.cache.skipped_lines for tr in runs),
        },
    }
    return rows, stats


def topk_capable(runs: list[TeacherRun], student_spec: str) -> frozenset[str]:
    """Transformers teachers whose vocabulary is the student's (its base is `synthesize.teacher`)."""
    local = [tr for tr in runs if tr.teacher.kind == "transformers"]
    if not local:
        return frozenset()
    student = models.load_tokenizer(models.resolve_model(student_spec)).get_vocab()
    return frozenset(tr.teacher.name for tr in local if tr.teacher.tok.get_vocab() == student)


_LOCAL_TEACHER = threading.Lock()  # fill_shard: local teachers' shards, one at a time in a process


def fill_shard(domain: str, params: Params, root: Path, shard: int, shards: int) -> dict:
    """Generate every teacher's outputs for shard `shard` of `shards` (every shards-th record of
    each split, from `shard` on) into the teachers' caches; writes no stage output.

    Run shards 0..shards-1 at once (flows/pipeline.py `shards`: concurrent Prefect tasks; or
    processes and machines sharing `root`), then `main()`: it finds every output in the caches,
    generates nothing but STaR's retries, votes and writes the stage's files (the merge). A
    killed shard resumes like `main()` does. Batches differ from an unsharded run's, so batched
    text may differ slightly (see Resuming above).
    """
    if not 0 <= shard < shards:
        raise ValueError(f"synthesize: shard {shard} is not in 0..{shards - 1}")
    spec = params.synthesize
    dom = get_domain(domain)
    src = stage_dir(root, domain, "deidentify")
    splits = {split: read_jsonl(src / f"{split}.jsonl")[shard::shards] for split in SPLITS}
    templates, opts = templates_hash(dom), teachers.options(spec)
    runs = []
    for s in spec.teacher_list():
        # Local models: one shard at a time per process (loading is not thread-safe, and they
        # share its cores); HTTP and replay teachers run all shards at once.
        with _LOCAL_TEACHER if s.kind == "transformers" else contextlib.nullcontext():
            tr = TeacherRun(s, teachers.build(s, spec), templates, root, domain, opts)
            runs.append(tr)
            try:
                for split, records in splits.items():
                    tr.fill([(str(r["id"]), tr.teacher.prompt(dom.teacher_prompt(r))) for r in records],
                            f"synthesize {domain} {split} {tr.teacher.name} shard {shard + 1}/{shards}")
            finally:
                tr.teacher.close()
    return {"shard": shard, "shards": shards, "records": sum(len(r) for r in splits.values()),
            "generated": sum(tr.generated for tr in runs), "reused": sum(tr.reused for tr in runs)}


def main(domain: str, params: Params, root: Path) -> dict:
    """Read the de-identified splits, synthesize, write rows and report.json; return a summary."""
    started = time.perf_counter()
    spec = params.synthesize
    dom = get_domain(domain)
    src, out = stage_dir(root, domain, "deidentify"), stage_dir(root, domain, "synthesize")
    splits = {split: read_jsonl(src / f"{split}.jsonl") for split in SPLITS}

    templates = templates_hash(dom)
    opts = teachers.options(spec)
    specs = spec.teacher_list()
    names = [s.name or s.spec or (s.model and f"{s.model}@{s.base_url}") or f"replay:{Path(s.path).name}" for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"synthesize.teachers: names must be unique, got {names}; set `name`")
    runs = []
    try:
        for s in specs:
            runs.append(TeacherRun(s, teachers.build(s, spec), templates, root, domain, opts))
        topk = topk_capable(runs, spec.teacher) if spec.topk_logprobs else frozenset()
        rows, stats = run(splits, dom, spec, runs, topk)
    finally:
        for tr in runs:
            tr.teacher.close()

    ledgers = {}
    for split in SPLITS:
        ledger = Ledger(stage=f"synthesize/{split}", n_in=len(splits[split]))
        ledger.n_out = write_jsonl(out / f"{split}.jsonl", rows[split])
        ledgers[split] = ledger.summary()  # asserts records in = out (synthesis drops nothing)
    completion = sum(s["completion_tokens"] for s in stats["splits"].values())
    gen_seconds = sum(s["seconds"] for s in stats["splits"].values())
    first = runs[0]
    report = {
        "domain": domain,
        "teacher": {"name": first.teacher.name, "kind": first.teacher.kind,
                    "spec": specs[0].spec or specs[0].base_url or specs[0].path,
                    "path": getattr(first.teacher, "path", None) and str(first.teacher.path),
                    "fingerprint": first.teacher.fingerprint()},
        "templates_sha256": templates,
        "generation": generation_settings(spec),
        "cache": {"key": first.key, "path": os.path.relpath(first.cache.path, root)},
        **stats,
        "topk_teachers": sorted(topk),
        "total": {
            "records": sum(len(r) for r in rows.values()),
            "kept": sum(s["kept"] for s in stats["splits"].values()),
            "prompt_tokens": sum(s["prompt_tokens"] for s in stats["splits"].values()),
            "completion_tokens": completion,
            "seconds": round(gen_seconds, 3),
            "completion_tokens_per_s": round(completion / gen_seconds, 1) if gen_seconds else None,
            "usd": round(sum(t["usd"] for t in stats["teachers"].values()), 6),
        },
        "ledger": ledgers,
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    for t in report["teachers"].values():
        t["cache"]["path"] = os.path.relpath(t["cache"]["path"], root)
    write_json(out / "report.json", report)
    return {
        **{split: {k: stats["splits"][split][k] for k in ("records", "kept", "teacher_accuracy")} for split in SPLITS},
        "generated": stats["this_run"]["generated"],
        "reused": stats["this_run"]["reused"],
    }
