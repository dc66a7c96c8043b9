"""Replay precomputed teacher outputs instead of generating them.

Two formats, chosen by `path`:
  - a `.jsonl` file of `{"id": <record id>, "output": "<text>"}` (or `"outputs": [...]`, one per
    sample): your own precomputed teacher, e.g. a batch job on a rented GPU;
  - a distilling step-by-step `llm/` folder (Hsieh et al., 2023, google-research/
    distilling-step-by-step): `<split>_CoT_<k>.json` lists of raw PaLM-540B completions, chunk
    k covering the next rows of the split. Record ids are `<task>-<split>-<index>`, as made by
    `load_step_by_step`. PaLM keeps writing an invented next question after its answer; each
    completion is cut at the first "\\n\\nQ:".

A record with no stored output gets an empty sample (an unparseable row, counted), never a
made-up one. `python -m tasks.teachers.replay ../shared/data/distill_step_by_step` prints the
share of PaLM answers that match the gold label for CQA and SVAMP.
"""

from __future__ import annotations

import ast
import hashlib
import json
import operator
import re
import sys
from pathlib import Path

from tasks.teachers.base import Options, Result, TeacherError

CUT = "\n\nQ:"


def cut(text: str) -> str:
    """The completion up to PaLM's invented next question."""
    return text.split(CUT, 1)[0].strip()


# --- distilling step-by-step: per-task answer extraction ------------------------------------

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def safe_eval(expr: str) -> float | None:
    """The value of an arithmetic expression of numbers, + - * / and parentheses; None otherwise."""

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -ev(node.operand) if isinstance(node.op, ast.USub) else ev(node.operand)
        raise ValueError(type(node).__name__)

    try:
        return ev(ast.parse(expr.replace(",", "").strip(), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None


def _number(value: float | None) -> str | None:
    if value is None:
        return None
    value = round(value, 6)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def parse_svamp(text: str) -> str | None:
    """`The answer is (84 / 2).` -> "42": the expression after the last "The answer is", evaluated."""
    m = re.findall(r"[Tt]he answer is\s*(.+?)\.?\s*$", cut(text), flags=re.M)
    return _number(safe_eval(m[-1])) if m else None


def parse_cqa(text: str, choices: list[str]) -> str | None:
    """`So the answer is (c) wooded area.` -> "wooded area": the choice named after the letter or text."""
    m = re.findall(r"[Ss]o the answer is\s*(.+?)\s*$", cut(text), flags=re.M)
    if not m:
        return None
    tail = m[-1].rstrip(". ").strip()
    letter = re.match(r"\(?([a-e])\)\s*(.*)", tail)
    if letter:
        return choices["abcde".index(letter.group(1))]
    lowered = tail.lower().strip("\"'")
    return next((c for c in choices if c.lower() == lowered), None)


def _chunks(llm: Path, split: str) -> list[str]:
    files = sorted(llm.glob(f"{split}_CoT_*.json"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if not files:
        raise TeacherError(f"replay: no {split}_CoT_*.json in {llm}")
    return [text for f in files for text in json.loads(f.read_text(encoding="utf-8"))]


def load_step_by_step(folder: str | Path, task: str, split: str) -> list[dict]:
    """The split's records, each with the PaLM completion, parsed answer and gold label.

    `{"id", "text", "label", "choices" (cqa), "output", "answer", "match"}`; `label` and `answer`
    are choice texts (cqa) or canonical numbers (svamp, the gold equation evaluated).
    """
    folder = Path(folder) / task
    lines = (folder / f"{task}_{split}.json").read_text(encoding="utf-8").splitlines()
    gold = [json.loads(line) for line in lines if line.strip()]
    outputs = _chunks(folder / "llm", split)
    if len(outputs) != len(gold):
        raise TeacherError(f"replay: {task}/{split} has {len(gold)} records but {len(outputs)} completions")
    rows = []
    for i, (g, out) in enumerate(zip(gold, outputs)):
        if task == "cqa":
            choices = g["choices"]
            text = g["question"] + "\nAnswer Choices:\n" + "\n".join(f"({'abcde'[j]}) {c}" for j, c in enumerate(choices))
            row = {"text": text, "label": g["answer"], "choices": choices, "answer": parse_cqa(out, choices)}
        elif task == "svamp":
            row = {"text": g["input"], "label": _number(safe_eval(g["label"])), "answer": parse_svamp(out)}
        else:
            raise TeacherError(f"replay: unknown distill_step_by_step task {task!r} (cqa, svamp)")
        rows.append({"id": f"{task}-{split}-{i:05d}", **row, "output": cut(out),
                     "match": row["answer"] is not None and row["answer"] == row["label"]})
    return rows


def step_by_step_report(folder: str | Path, task: str, split: str) -> dict:
    rows = load_step_by_step(folder, task, split)
    parsed = sum(r["answer"] is not None for r in rows)
    match = sum(r["match"] for r in rows)
    return {"task": task, "split": split, "records": len(rows), "parsed": parsed, "matches_gold": match,
            "match_share": round(match / len(rows), 4)}


# --- the teacher ------------------------------------------------------------------------------


def _load_outputs(path: Path) -> dict[str, list[str]]:
    if path.is_file():
        outputs: dict[str, list[str]] = {}
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                texts = entry["outputs"] if "outputs" in entry else [entry["output"]]
                outputs[str(entry["id"])] = [str(t) for t in texts]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise TeacherError(f"replay: {path}:{n} is not {{\"id\", \"output\"}} JSON ({e})") from e
        return outputs
    if path.name == "llm" and path.is_dir():  # <dataset>/<task>/llm
        task = path.parent.name
        outputs = {}
        for split in sorted({p.stem.split("_CoT_")[0] for p in path.glob("*_CoT_*.json")}):
            for i, text in enumerate(_chunks(path, split)):
                outputs[f"{task}-{split}-{i:05d}"] = [cut(text)]
        return outputs
    raise TeacherError(f"replay: {path} is neither a .jsonl file nor a distill_step_by_step llm/ folder")


class ReplayTeacher:
    kind = "replay"

    def __init__(self, path: str | Path, *, name: str | None = None):
        self.path = Path(path)
        self.name = name or f"replay:{self.path.name}"
        self.outputs = _load_outputs(self.path)
        self.batch_size, self.max_batch_tokens = 1024, None
        self.missing = 0  # requests with no stored output (answered with an empty sample)

    def fingerprint(self) -> str:
        files = [self.path] if self.path.is_file() else sorted(self.path.glob("*_CoT_*.json"))
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.name.encode() + b"\0" + f.read_bytes())
        return "replay:" + digest.hexdigest()[:16]

    def settings(self, opts: Options) -> dict:
        return {"backend": self.kind}  # stored outputs depend on nothing we set

    def prompt(self, user: str) -> str:
        return user

    def tokens(self, prompt: str) -> int:
        return 0

    def generate(self, requests: list[tuple[str, str]], opts: Options) -> list[Result]:
        results = []
        for rid, _ in requests:
            texts = self.outputs.get(rid)
            if texts is None:
                self.missing += 1
                texts = [""]
            results.append(Result(prompt_tokens=0, samples=[
                {"text": t, "completion_tokens": len(t.split())} for t in texts]))  # words: no tokenizer here
        return results

    def close(self) -> None:
        pass


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/distill_step_by_step"
    for task in ("cqa", "svamp"):
        for split in ("train", "test"):
            print(json.dumps(step_by_step_report(root, task, split)))
