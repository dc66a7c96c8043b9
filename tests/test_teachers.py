"""Teachers and quality controls: replay (own jsonl, distilling step-by-step's PaLM rationales),
the weighted self-consistency vote, length-sorted dynamic batches, confidence and top-k capture
on the tiny teacher, several teachers in one stage run, and a run killed from outside.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY_TEACHER
from test_synthesize import make_project, make_records
from domains import get_domain
from tasks import synthesize as syn
from tasks.params import Params
from tasks.records import read_jsonl, write_jsonl
from tasks.teachers import Options, TeacherError
from tasks.teachers.replay import (
    ReplayTeacher, cut, load_step_by_step, parse_cqa, parse_svamp, safe_eval, step_by_step_report,
)
from tasks.teachers.transformers import TransformersTeacher

EDU = get_domain("education")
HEALTH = get_domain("healthcare")


def params(**synth) -> Params:
    base = {"teacher": TINY_TEACHER, "batch_size": 4, "max_new_tokens": 12, "dtype": "float32", **synth}
    return Params.model_validate({"domains": {"healthcare": {}, "education": {}}, "synthesize": base})


# ---------------------------------------------------------------------------------------------
# replay


def test_safe_eval_does_arithmetic_only():
    assert safe_eval("( 10.0 * 45.0 )") == 450 and safe_eval("(84 / 2) - -1") == 43 and safe_eval("1,200 + 3") == 1203
    for bad in ("__import__('os').system('true')", "2 ** 8", "x + 1", "1 / 0", "", "[1]"):
        assert safe_eval(bad) is None, bad


def test_palm_answer_extraction():
    choices = ["british columbia", "body of water", "wooded area", "pay debts", "zoo"]
    assert parse_cqa("Beavers need wood. So the answer is (c) wooded area.\n\nQ: next? So the answer is (a)", choices) \
        == "wooded area"
    assert parse_cqa("So the answer is zoo.", choices) == "zoo"
    assert parse_cqa("I am not sure.", choices) is None
    assert parse_svamp("10 * 45 is 450. The answer is (10 * 45).\n\nQ: 15 trees... The answer is 6.") == "450"
    assert parse_svamp("The answer is (84 / 2).") == "42" and parse_svamp("No idea.") is None
    assert cut("Rationale.\n\nQ: invented question\nA: more") == "Rationale."


@pytest.mark.parametrize("task, split, low", [("cqa", "test", 0.7), ("svamp", "test", 0.7), ("svamp", "train", 0.65)])
def test_replay_reproduces_the_palm_rationales(shared_data, task, split, low):
    folder = shared_data / "distill_step_by_step"
    rows = load_step_by_step(folder, task, split)
    raw = [t for k in range(10) if (folder / task / "llm" / f"{split}_CoT_{k}.json").is_file()
           for t in json.loads((folder / task / "llm" / f"{split}_CoT_{k}.json").read_text())]
    assert len(rows) == len(raw)
    teacher = ReplayTeacher(folder / task / "llm")
    results = teacher.generate([(r["id"], r["text"]) for r in rows], Options())
    assert [res.samples[0]["text"] for res in results] == [cut(t) for t in raw]  # the PaLM text, cut
    assert teacher.missing == 0
    report = step_by_step_report(folder, task, split)
    print(json.dumps(report))  # the share whose answer matches gold (PaLM-540B CoT)
    assert report["matches_gold"] == sum(r["match"] for r in rows)
    assert low < report["match_share"] < 0.95 and report["parsed"] > 0.95 * report["records"]
    if task == "svamp":  # gold equations are evaluated: "( 10.0 * 45.0 )" -> "450"
        assert all(r["label"] is not None for r in rows)


def test_replay_of_own_outputs_through_the_stage(tmp_path):
    root = make_project(tmp_path, "education", n_train=6, n_test=2)
    records = make_records("education", 8, "train")
    stored = [{"id": r["id"], "output": f"Work it out.\nAnswer: {r['label']}"} for r in records[:5]]
    stored.append({"id": records[5]["id"], "outputs": ["Hmm.\nAnswer: 1", "Sum it.\nAnswer: 1", "Add.\nAnswer: 0"]})
    write_jsonl(tmp_path / "teacher.jsonl", stored)  # records[6:] have nothing stored
    p = params(teachers=[{"kind": "replay", "path": str(tmp_path / "teacher.jsonl"), "name": "mine"}])
    summary = syn.main("education", p, root)
    train = read_jsonl(root / "data/education/synthesize/train.jsonl")
    assert [r["kept"] for r in train] == [True] * 5 + [False]
    assert train[0]["rationale"] == "Work it out." and train[0]["teacher"] == "mine"
    assert train[5]["teacher_answer"] == "1" and train[5]["agreement"] == pytest.approx(2 / 3, abs=1e-3)
    assert train[5]["teacher_votes"] == {"1": 2.0, "0": 1.0}
    test = read_jsonl(root / "data/education/synthesize/test.jsonl")
    assert all(r["teacher_output"] == "" and r["teacher_answer"] is None for r in test)  # nothing stored
    report = json.loads((root / "data/education/synthesize/report.json").read_text())
    assert report["teachers"]["mine"]["missing"] == 2 and summary["train"]["kept"] == 5
    (tmp_path / "bad.jsonl").write_text('{"id": "x"}\n')
    with pytest.raises(TeacherError, match="bad.jsonl:1"):
        ReplayTeacher(tmp_path / "bad.jsonl")


# ---------------------------------------------------------------------------------------------
# vote and batches (pure)


def test_weighted_vote_picks_the_heaviest_answer_and_its_best_sample():
    rec = {"id": "e", "text": "Maya has 3 and gets 4 more.", "label": "7"}
    s = lambda text, lp=None: {"text": text, "answer_logprob": lp}  # noqa: E731
    cands = [("a", 1.0, s("Answer: 5")), ("a", 1.0, s("3 + 4 = 7.\nAnswer: 7", -2.0)),
             ("b", 0.5, s("3 + 4 = 7.\nAnswer: 7", -0.1)), ("b", 0.5, s("Answer: 7"))]
    v = syn.vote(EDU, rec, cands)
    assert v["votes"] == {"5": 1.0, "7": 2.0} and v["agreement"] == pytest.approx(2 / 3, abs=1e-3)
    assert v["teacher"] == "b" and v["sample"]["answer_logprob"] == -0.1  # rationale first, then confidence
    heavy = syn.vote(EDU, rec, [("a", 3.0, s("Answer: 5")), ("b", 1.0, s("Answer: 7")), ("c", 1.0, s("Answer: 7"))])
    assert heavy["sample"]["text"] == "Answer: 5" and heavy["agreement"] == 0.6
    tie = syn.vote(EDU, rec, [("a", 1.0, s("Answer: 5")), ("b", 1.0, s("Answer: 7"))])
    assert tie["teacher"] == "a"  # ties go to the first teacher
    none = syn.vote(EDU, rec, [("a", 1.0, s("no idea")), ("b", 1.0, s("none"))])
    assert none["agreement"] == 0.0 and none["teacher"] == "a" and none["votes"] == {}


class Lengths:
    def tokens(self, prompt: str) -> int:
        return len(prompt)


def test_batches_are_length_sorted_and_capped_by_count_and_tokens():
    todo = [(str(i), "x" * n) for i, n in enumerate([5, 1, 9, 3, 7, 2, 8])]
    batches = syn.plan_batches(todo, Lengths(), 3, None)
    assert [[len(p) for _, p in b] for b in batches] == [[1, 2, 3], [5, 7, 8], [9]]
    batches = syn.plan_batches(todo, Lengths(), 4, 16)  # padded tokens = size * longest <= 16
    assert [[len(p) for _, p in b] for b in batches] == [[1, 2, 3], [5, 7], [8], [9]]
    assert sorted(i for b in batches for i, _ in b) == sorted(i for i, _ in todo)


# ---------------------------------------------------------------------------------------------
# the local teacher: samples, confidence, top-k


def test_samples_confidence_and_topk_on_the_tiny_teacher():
    teacher = TransformersTeacher(TINY_TEACHER, dtype="float32")
    requests = [(str(i), teacher.prompt(f"What is {i} + 1? Answer: {i + 1}")) for i in range(3)]
    results = teacher.generate(requests, Options(n=3, temperature=1.0, max_new_tokens=6, scores=True, topk=4, seed=1))
    assert len(results) == 3 and all(len(r.samples) == 3 for r in results)
    for r in results:
        for s in r.samples:
            k = s["completion_tokens"]
            assert len(s["topk"]["ids"]) == k and all(len(row) == 4 for row in s["topk"]["ids"])
            assert all(a >= b for row in s["topk"]["logprobs"] for a, b in zip(row, row[1:]))  # best first
            assert s["logprob"] <= 0 and 0 <= s["entropy"] <= math.log(len(teacher.tok)) + 1e-3
    again = teacher.generate(requests, Options(n=3, temperature=1.0, max_new_tokens=6, scores=True, topk=4, seed=1))
    assert [s["text"] for r in again for s in r.samples] == [s["text"] for r in results for s in r.samples]
    greedy = teacher.generate(requests[:1], Options(max_new_tokens=6, scores=True))[0].samples[0]
    top1 = teacher.generate(requests[:1], Options(max_new_tokens=6, topk=1))[0].samples[0]["topk"]
    assert greedy["logprob"] == pytest.approx(sum(row[0] for row in top1["logprobs"]), abs=0.01)  # greedy = top-1


def test_two_teachers_with_samples_and_topk_through_the_stage(tmp_path):
    root = make_project(tmp_path, "education", n_train=4, n_test=2)
    records = make_records("education", 6, "train")
    write_jsonl(tmp_path / "t.jsonl", [{"id": r["id"], "output": f"Add.\nAnswer: {r['label']}"} for r in records])
    p = params(samples=2, temperature=0.8, topk_logprobs=3, teachers=[
        {"kind": "transformers", "spec": TINY_TEACHER, "name": "tiny", "weight": 0.1},
        {"kind": "replay", "path": str(tmp_path / "t.jsonl"), "name": "oracle", "weight": 1.0}])
    syn.main("education", p, root)
    report = json.loads((root / "data/education/synthesize/report.json").read_text())
    assert set(report["teachers"]) == {"tiny", "oracle"} and report["topk_teachers"] == ["tiny"]
    assert report["teachers"]["tiny"]["generated"] == 6 and report["teachers"]["tiny"]["completion_tokens"] > 0
    train = read_jsonl(root / "data/education/synthesize/train.jsonl")
    for row in train:  # the oracle's weight outvotes two noisy samples
        assert row["kept"] and row["teacher"] == "oracle" and row["agreement"] >= 1.0 / 1.2 - 1e-3
        assert row["teacher_topk"] is None  # the replayed text has no token log-probs
    assert len(list((root / ".cache/synthesize/education").glob("*.jsonl"))) == 2  # one cache per teacher
    tiny_only = params(topk_logprobs=3)
    syn.main("education", tiny_only, root)
    for row in read_jsonl(root / "data/education/synthesize/train.jsonl"):  # white-box: one top-k row per token
        n_tokens = len(row["teacher_topk"]["ids"])
        assert n_tokens > 0 and len(row["teacher_topk"]["logprobs"]) == n_tokens
        assert all(len(k) == 3 for k in row["teacher_topk"]["ids"]) and row["teacher_entropy"] > 0


# ---------------------------------------------------------------------------------------------
# killed from outside (SIGKILL mid-run), resumed: exactly one result per record

RUN = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_teachers import params
from tasks import synthesize
synthesize.main("education", params(batch_size=2, max_new_tokens=8), Path({root!r}))
"""


def test_a_run_killed_mid_run_resumes_with_one_result_per_record(tmp_path):
    root = make_project(tmp_path, "education", n_train=24, n_test=4)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", RUN.format(tests=str(ROOT / "tests"), root=str(root))], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache_dir = root / ".cache/synthesize/education"
    deadline = time.monotonic() + 240
    written = 0
    while time.monotonic() < deadline and proc.poll() is None:
        files = list(cache_dir.glob("*.jsonl"))
        written = len(files[0].read_bytes().splitlines()) if files else 0
        if written >= 4:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert 4 <= written < 28 and not (root / "data/education/synthesize").exists()
    cache = next(cache_dir.glob("*.jsonl"))
    before = [line for line in cache.read_bytes().splitlines(keepends=True) if line.endswith(b"\n")]

    summary = syn.main("education", params(batch_size=2, max_new_tokens=8), root)
    assert summary["reused"] == len(before) and summary["generated"] == 28 - len(before)
    after = cache.read_bytes().splitlines(keepends=True)
    assert after[: len(before)] == before  # finished results untouched, not regenerated
    ids = [json.loads(line)["id"] for line in after]
    assert len(ids) == 28 and len(set(ids)) == 28  # exactly one result per record
    rows = [r["id"] for s in ("train", "test") for r in read_jsonl(root / f"data/education/synthesize/{s}.jsonl")]
    assert sorted(rows) == sorted(ids)
