"""End to end on tiny settings: both drivers, in a temporary git + DVC project.

DVC: `dvc repro` runs all seven stages, a second repro is a no-op, a fairness threshold change
reruns only fairness, the leak guard (it scans the fairness report) and register. Prefect: the
flow runs the same stages under the test harness, after which `dvc status` is clean and the model loads back from the registry by alias.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY_TEACHER

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
TINY = {
    "domains": {
        "healthcare": {"source": {"kind": "synthetic", "n_records": 60}, "test_fraction": 0.3},
        "education": {"source": {"kind": "synthetic", "n_records": 60}, "test_fraction": 0.3},
    },
    "synthesize": {"teacher": TINY_TEACHER, "batch_size": 16, "max_new_tokens": 16, "dtype": "float32"},
    "condense": {"method": "kcenter", "ratio": 0.8, "seed": 0},
    "distill": {"keep_first": 1, "keep_last": 1, "steps": 3, "batch_size": 4, "max_length": 128,
                "eval_max_new_tokens": 4},
    "fairness": {"min_group_size": 2, "max_accuracy_gap": 1.0, "max_gap_increase": 1.0},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) and key != "domains" else value
    return out


def sh(*cmd: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout + done.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh clone-like project: code, dvc.yaml, tiny params.yaml, git + DVC initialised."""
    for name in ("tasks", "domains", "flows"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for domain in ("healthcare", "education"):
        (tmp_path / "data" / domain / "raw").mkdir(parents=True)
        shutil.copy(ROOT / "data" / domain / "raw" / "README.md", tmp_path / "data" / domain / "raw")
    shutil.copy(ROOT / "dvc.yaml", tmp_path)
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    params["register"]["tracking_uri"] = f"sqlite:///{tmp_path / 'mlruns.db'}"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=tmp_path)
    sh("git", "config", "user.email", "t@t", cwd=tmp_path)
    sh("git", "config", "user.name", "t", cwd=tmp_path)
    sh("dvc", "init", "-q", cwd=tmp_path)
    sh("dvc", "config", "core.autostage", "true", cwd=tmp_path)
    sh("dvc", "config", "core.analytics", "false", cwd=tmp_path)
    sh("git", "add", "-A", cwd=tmp_path)
    sh("git", "commit", "-qm", "init", cwd=tmp_path)
    return tmp_path


def _ran(log: str) -> set[str]:
    return {line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")}


def test_dvc_repro_then_noop_then_only_fairness_guard_and_register(project: Path):
    log = sh("dvc", "repro", "register@healthcare", cwd=project)
    stages = ["deidentify", "synthesize", "condense", "distill", "fairness", "guard", "register"]
    assert _ran(log) == {f"{s}@healthcare" for s in stages}
    reg = json.loads((project / "data/healthcare/register/registration.json").read_text())
    assert reg["version"] and "challenger" in reg["aliases"]

    again = sh("dvc", "repro", "register@healthcare", cwd=project)
    assert _ran(again) == set(), again

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["fairness"]["max_accuracy_gap"] = 0.5
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    targets = [f"{s}@healthcare" for s in stages]
    status = json.loads(sh("dvc", "status", "--json", *targets, cwd=project).splitlines()[-1])
    assert set(status) == {"fairness@healthcare"}, status
    log = sh("dvc", "repro", "register@healthcare", cwd=project)
    assert _ran(log) == {"fairness@healthcare", "guard@healthcare", "register@healthcare"}


def test_prefect_flow_records_stages_in_dvc_lock(project: Path):
    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import pipeline

    with prefect_test_harness(server_startup_timeout=120):
        summaries = pipeline(domain="education", root=str(project))
    assert set(summaries) == {"deidentify", "synthesize", "condense", "distill", "fairness", "guard", "register"}
    status = json.loads(sh("dvc", "status", "--json", *[f"{s}@education" for s in summaries], cwd=project)
                        .splitlines()[-1])
    assert status == {}, status
    log = sh("dvc", "repro", "register@education", cwd=project)
    assert _ran(log) == set(), log

    reg = json.loads((project / "data/education/register/registration.json").read_text())
    answer = sh(str(BIN / "stillhouse"), "ask", "--domain", "education",
                "Tutoring record: Sam has 3 apples and buys 4 more. How many apples?", cwd=project)
    assert answer.strip(), "the registered model gave no answer"
    assert reg["model_uri"].startswith("models:/")
