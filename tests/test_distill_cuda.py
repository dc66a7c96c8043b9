"""The distill engine on CUDA: a step agrees with the CPU for every divergence, a run with GKD and
hidden alignment cut off mid-way resumes to the same weights, and `accelerate launch` runs the
stage. Skipped without a GPU (CI has none); run on a GPU machine with `pytest tests/test_distill_cuda.py`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import ROOT, TINY_TEACHER
from tasks import distill as ds
from tasks.distillation import trainer
from tasks.distillation.objectives import task_weights
from tasks.distillation.teacher import TeacherStates
from tasks.params import Distill

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


# A random 2-block llama and token-id examples: no tokenizer or domain (a GPU machine may lack
# Presidio, which the domains import). The same shapes as tests/test_distill.py's.
PARAMS = dict(keep_first=1, keep_last=1, steps=8, batch_size=4, max_length=128, lr=3e-3, seed=0)


def setup(device: str):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    teacher = LlamaForCausalLM(config).eval().to(device)
    g = torch.Generator().manual_seed(1)
    pools = {task: [ds.Example(task, f"{task}{i}", torch.randint(3, 64, (6 + i % 3,), generator=g).tolist(),
                               torch.randint(3, 64, (2 + i % 4,), generator=g).tolist() + [2]) for i in range(12)]
             for task in (ds.LABEL, ds.RATIONALE)}
    return ds.init_student(teacher, [0]), teacher, pools, 0


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd", "skew_kl", "tvd"])
def test_a_cuda_step_matches_the_cpu_step(divergence):
    p = Distill(**{**PARAMS, "divergence": divergence, "kd_weight": 0.5, "ce_weight": 0.5, "chunk_size": 16})
    got = {}
    for device in ("cpu", "cuda"):
        student, teacher, pools, pad = setup(device)
        examples = pools[ds.LABEL][:4] + pools[ds.RATIONALE][:4]
        out = trainer.step_loss(student, TeacherStates(teacher, pad), None, examples, p, task_weights(p, True), False,
                                pad, torch.device(device))
        out["loss"].backward()
        grad = torch.cat([q.grad.flatten().float().cpu() for q in student.parameters() if q.grad is not None])
        got[device] = {k: out[k].item() for k in ("loss", "kd", "ce")}, grad
    (cpu, g_cpu), (cuda, g_cuda) = got["cpu"], got["cuda"]
    for key in cpu:  # CUDA runs its blocks under bf16 autocast: agreement to bf16 precision
        assert cuda[key] == pytest.approx(cpu[key], rel=3e-2, abs=1e-3), (key, cpu, cuda)
    assert torch.nn.functional.cosine_similarity(g_cpu, g_cuda, dim=0) > 0.99


class Crash(Exception):
    pass


def test_a_crashed_cuda_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    # GKD on about half the steps, hidden alignment, a checkpoint every 2 steps (test_distill's resume params)
    params = Distill(**PARAMS, checkpoint_every=2, gkd_lambda=0.5, gkd_max_new_tokens=4, hidden_weight=0.1)
    student, teacher, pools, pad = setup("cuda")
    reference = ds.train(student, teacher.to(torch.bfloat16), pools, params, pad, checkpoint_dir=tmp_path / "a",
                         progress=False)
    assert next(student.parameters()).is_cuda and 0 < sum(h["on_policy"] for h in reference) < params.steps

    real, saved = trainer.save_checkpoint, []

    def save_then_crash(path, state):
        real(path, state)
        saved.append(state["step"])
        if len(saved) == 2:
            raise Crash

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_crash)
    student2, teacher, pools, pad = setup("cuda")
    with pytest.raises(Crash):
        ds.train(student2, teacher.to(torch.bfloat16), pools, params, pad, checkpoint_dir=tmp_path / "b", progress=False)
    monkeypatch.undo()
    resumed_student, teacher, pools, pad = setup("cuda")
    resumed = ds.train(resumed_student, teacher.to(torch.bfloat16), pools, params, pad, checkpoint_dir=tmp_path / "b",
                       progress=False)
    assert [h["on_policy"] for h in resumed] == [h["on_policy"] for h in reference]
    for a, b in zip(resumed[4:], reference[4:]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    ref = student.state_dict()
    for name, value in resumed_student.state_dict().items():
        torch.testing.assert_close(value, ref[name], rtol=1e-4, atol=1e-6, msg=name)


def test_accelerate_launch_runs_the_stage_on_cuda(tmp_path: Path):
    pytest.importorskip("presidio_analyzer")  # the domains' recognizers
    from test_distill import TINY_PARAMS, _stage_inputs

    _stage_inputs(tmp_path, rationale=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "domains": {"healthcare": {}}, "synthesize": {"teacher": TINY_TEACHER}, "distill": TINY_PARAMS}))
    done = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "tasks.distill", "--domain", "healthcare",
         "--root", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "data/healthcare/distill/metrics.json").read_text())
    assert metrics["device"] == torch.cuda.get_device_name(0) and metrics["steps"] == TINY_PARAMS["steps"]
    assert (tmp_path / "data/healthcare/distill/student/stillhouse.json").exists()
