"""Data parallelism on the CPU: two torchrun processes (gloo) take the same step as one process
with the whole batch, stay in sync, and run the whole stage. The same code runs under NCCL on GPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT
from tasks import models
from tasks.distillation import trainer
from tasks.distillation.checkpoints import trainable_parameters
from tasks.distillation.distributed import Dist
from tasks.distillation.examples import LABEL, RATIONALE
from tasks.distillation.objectives import HiddenAlign, task_weights
from tasks.distillation.teacher import TeacherStates

# Run by each of two processes, and by the test itself as one process.
SCRIPT = """
import json, os, sys
import torch
sys.path.insert(0, {tests!r})
from test_distill_parallel import one_step, setup
from tasks.distillation import trainer
from tasks.distillation.distributed import Dist

dist = Dist.from_env()
grads, terms = one_step(dist)
student, teacher, pools, params, pad_id = setup()
heldout = trainer.heldout_loss(student, pools, pad_id)
history = trainer.train(student, teacher, pools, params, pad_id, progress=False)
torch.save({{"grads": grads, "terms": terms, "heldout": heldout, "history": history, "weights": student.state_dict(),
            "gathered": dist.gather(dist.shard(list(range(11))))}}, os.path.join({out!r}, f"rank{{dist.rank}}.pt"))
"""

# Two processes train with checkpoints; with KILL, the first dies hard after its second checkpoint.
RESUME_SCRIPT = """
import os, signal, sys
import torch
sys.path.insert(0, {tests!r})
from test_distill_parallel import setup
from tasks.distillation import trainer
from tasks.distillation.distributed import Dist

dist = Dist.from_env()
real, saved = trainer.save_checkpoint, []
def save_then_die(path, state):
    real(path, state)
    saved.append(state["step"])
    if {kill!r} and len(saved) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
trainer.save_checkpoint = save_then_die
student, teacher, pools, params, pad_id = setup()
params = params.model_copy(update={{"checkpoint_every": 2}})
history = trainer.train(student, teacher, pools, params, pad_id, checkpoint_dir={ckpt!r}, progress=False)
torch.save({{"weights": student.state_dict(), "history": history}}, os.path.join({out!r}, f"resumed{{dist.rank}}.pt"))
"""


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """Two CPU processes (gloo), one thread each."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args],
                          cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


def setup():
    """The resume test's student, teacher (float32 here) and pools; 8 steps with on-policy and hidden-state terms."""
    from test_distill import resume_setup

    student, teacher, pools, params, pad_id = resume_setup()
    return student, teacher.float(), pools, params.model_copy(update={"checkpoint_every": 0}), pad_id


def one_step(dist: Dist) -> tuple[list[torch.Tensor], dict[str, float]]:
    """One multi-task step's summed gradients and terms over 7 examples (shares of 4 and 3 in two processes)."""
    student, teacher, pools, params, pad_id = setup()
    torch.manual_seed(0)
    align = HiddenAlign(params.hidden_layers, student.config.hidden_size, teacher.config.hidden_size, params.hidden_loss)
    examples = pools[LABEL][:3] + pools[RATIONALE][:4]
    out = trainer.step_loss(student, TeacherStates(teacher, pad_id, align.teacher_layers), align, dist.shard(examples),
                            params, task_weights(params, True), False, pad_id, "cpu", dist)
    out["loss"].backward()
    trainable = list(trainable_parameters(student).values()) + list(align.parameters())
    dist.sum_gradients(trainable)
    terms = dist.sum_floats({k: float(v.detach()) for k, v in out.items() if k != "tokens"} | {"tokens": out["tokens"]})
    return [p.grad.clone() for p in trainable], terms


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("dp")
    (out / "run.py").write_text(SCRIPT.format(tests=str(ROOT / "tests"), out=str(out)))
    done = torchrun(str(out / "run.py"))
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def test_two_processes_take_the_one_process_step(two):
    grads, terms = one_step(Dist())
    for rank in two:  # every logged term is the whole batch's, not the share's
        assert rank["terms"].keys() == terms.keys()
        for k, v in terms.items():
            assert rank["terms"][k] == pytest.approx(v, rel=1e-5, abs=1e-9), k
    # Gradients: float32 ops (embedding, norms, head, projection) agree to rounding; the blocks' matmuls run
    # under bf16 autocast where the CPU has native bf16, and a different batch shape rounds differently there.
    bf16 = models.native_bf16("cpu")
    for i, (g, g0, g1) in enumerate(zip(grads, two[0]["grads"], two[1]["grads"])):
        assert torch.equal(g0, g1), i  # one all-reduce: both processes hold the same gradient
        rel = float((g0 - g).norm() / g.norm())
        assert rel < (1e-2 if bf16 and g.dim() == 2 and g.shape[0] != 32000 else 1e-5), (i, tuple(g.shape), rel)


def test_two_processes_stay_in_sync_and_share_the_evaluation(two):
    student, teacher, pools, params, pad_id = setup()
    heldout = trainer.heldout_loss(student, pools, pad_id)
    for rank in two:
        assert rank["heldout"]["loss"] == pytest.approx(heldout["loss"], rel=1e-5)  # each scored half, sums added
        assert rank["gathered"] == list(range(11))
    h0, h1 = two[0]["history"], two[1]["history"]
    assert [h["step"] for h in h0] == list(range(1, 9))
    assert [{**h, "seconds": 0} for h in h0] == [{**h, "seconds": 0} for h in h1]  # every logged term is shared
    assert 0 < sum(h["on_policy"] for h in h0) < 8  # both kinds of step ran in two processes
    for name, value in two[0]["weights"].items():
        assert torch.equal(value, two[1]["weights"][name]), name  # the replicas never drift apart
    reference = trainer.train(student, teacher, pools, params, pad_id, progress=False)
    assert h0[0]["loss"] == pytest.approx(reference[0]["loss"], rel=1e-5)  # the same first batch
    assert h0[0]["tokens"] == reference[0]["tokens"]


def test_two_killed_processes_resume_to_the_same_weights(two, tmp_path: Path):
    """Each process's teacher memo and RNG go into the checkpoint, so the resumed pair takes the
    uninterrupted pair's steps bit for bit."""
    ckpt = tmp_path / "checkpoints"
    for kill in (True, False):
        script = tmp_path / f"kill{kill}.py"
        script.write_text(RESUME_SCRIPT.format(tests=str(ROOT / "tests"), ckpt=str(ckpt), out=str(tmp_path), kill=kill))
        done = torchrun(str(script))
        if kill:
            assert done.returncode != 0 and not list(tmp_path.glob("resumed*.pt")), done.stderr[-3000:]
            [saved] = list(ckpt.glob("*.pt"))
            state = torch.load(saved, weights_only=False)
            assert state["step"] == 4 and len(state["processes"]) == 2
            memo = [set(p["teacher_memo"]) for p in state["processes"]]
            assert memo[0] and memo[1] and memo[0] != memo[1]  # each process memoised its own shares
        else:
            assert done.returncode == 0 and "resumed from" in done.stdout, done.stderr[-3000:]
    assert not list(ckpt.glob("*.pt"))  # finished: nothing to resume
    for rank in (0, 1):
        resumed = torch.load(tmp_path / f"resumed{rank}.pt", weights_only=False)
        for name, value in two[0]["weights"].items():
            assert torch.equal(resumed["weights"][name], value), (rank, name)
        # every logged term too; teacher_examples sums the processes' own counts, restored per process
        assert [{**h, "seconds": 0} for h in resumed["history"]] == [{**h, "seconds": 0} for h in two[0]["history"]]


def test_the_stage_runs_under_torchrun_with_two_processes(tmp_path: Path):
    pytest.importorskip("presidio_analyzer")  # the domains' recognizers
    from conftest import TINY_TEACHER
    from test_distill import TINY_PARAMS, _stage_inputs

    _, test = _stage_inputs(tmp_path, rationale=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "domains": {"healthcare": {}}, "synthesize": {"teacher": TINY_TEACHER}, "distill": dict(TINY_PARAMS, eval_every=3)}))
    done = torchrun("-m", "tasks.distill", "--domain", "healthcare", "--root", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "data/healthcare/distill"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == TINY_PARAMS["steps"] and metrics["n_test"] == len(test)
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in predictions] == [r["id"] for r in test]  # each process answered half, gathered in order
    assert (out / "student/stillhouse.json").exists()
