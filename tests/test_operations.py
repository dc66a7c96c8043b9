"""Operations with real servers on 127.0.0.1, in a temporary git + DVC copy of the project.

A Prefect server (its own PREFECT_HOME), the `stillhouse` process work pool and a worker; the
deployments of the real prefect.yaml (`prefect deploy --all`); an MLflow tracking server
(SQLite + artifacts folder); a local DVC remote. One tiny pipeline run, triggered through the
healthcare deployment with synthesis in 2 concurrent shards and registered on the MLflow
server, is shared by the tests below. Everything started here is stopped at the end, and the
module fails if any process it started (children included) is still alive.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import ROOT
from test_pipeline import TINY, _merge

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
MARK = "STILLHOUSE_OPS_TEST"  # every process started here, and its children, carry this variable
DOMAIN = "healthcare"
STAGE_NAMES = [f"{s}@{DOMAIN}" for s in ("deidentify", "synthesize", "condense", "distill", "fairness", "guard",
                                         "register")]
MODEL = f"stillhouse-{DOMAIN}"
NOTE = "Clinical note: 58 yo M c/o crushing chest pain radiating to left arm, troponin elevated."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Ops:
    tmp: Path
    project: Path
    env: dict  # for every command: PATH, the marker, Prefect pointed at the test server
    mlflow_url: str = ""
    prefect_api: str = ""
    procs: list = field(default_factory=list)  # (name, Popen, log path)

    def sh(self, *cmd: str, check: bool = True, timeout: float = 900, **env) -> subprocess.CompletedProcess:
        # PWD too: prefect.yaml's `{{ $PWD }}` is read from the environment, as a shell sets it
        done = subprocess.run(cmd, cwd=self.project, env={**self.env, "PWD": str(self.project), **env},
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check:
            assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
        return done

    def start(self, name: str, *cmd: str, cwd: Path | None = None) -> subprocess.Popen:
        """A service in its own process group (stopped as a group), output to <tmp>/<name>.log."""
        with open(self.tmp / f"{name}.log", "w") as log:
            proc = subprocess.Popen(cmd, cwd=cwd or self.project, env={**self.env, "PWD": str(cwd or self.project)},
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, proc, log))
        return proc

    def wait_http(self, url: str, proc: subprocess.Popen, name: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}:\n{(self.tmp / f'{name}.log').read_text()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=5).status_code == 200:
                    return
            time.sleep(1)
        pytest.fail(f"{name} did not answer {url} in {timeout} s:\n{(self.tmp / f'{name}.log').read_text()[-4000:]}")


def marked_pids(token: str) -> list[int]:
    """Live processes whose environment carries this module's marker."""
    needle = f"{MARK}={token}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
    return pids


def stop_all(ops: Ops) -> list[str]:
    """SIGTERM each service's process group, SIGKILL what lingers; returns what was still alive."""
    for _, proc, _ in reversed(ops.procs):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for _, proc, _ in ops.procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    deadline = time.monotonic() + 15
    left = marked_pids(ops.env[MARK])
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = marked_pids(ops.env[MARK])
    orphans = []
    for pid in left:  # children that left their group (e.g. a flow run the worker started)
        with contextlib.suppress(OSError):
            cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ")[:200]
            orphans.append(f"{pid}: {cmdline.decode(errors='replace')}")
            os.kill(pid, signal.SIGKILL)
    return orphans


def make_project(path: Path, tracking_uri: str, remote: Path, env: dict) -> None:
    """A clone-like project: code, dvc.yaml, prefect.yaml, .dvc/config, tiny params, git + DVC."""
    for name in ("tasks", "domains", "flows"):
        shutil.copytree(ROOT / name, path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for domain in ("healthcare", "education"):
        (path / "data" / domain / "raw").mkdir(parents=True)
        shutil.copy(ROOT / "data" / domain / "raw" / "README.md", path / "data" / domain / "raw")
    for name in ("dvc.yaml", "prefect.yaml", ".gitignore"):
        shutil.copy(ROOT / name, path)
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    params["register"]["tracking_uri"] = tracking_uri  # the MLflow server
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def sh(*cmd):
        subprocess.run(cmd, cwd=path, env=env, check=True, capture_output=True)

    sh("git", "init", "-q")
    sh("git", "config", "user.email", "t@t")
    sh("git", "config", "user.name", "t")
    sh("dvc", "init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", path / ".dvc" / "config")  # the project's: default remote `storage`
    sh("dvc", "remote", "modify", "--local", "storage", "url", str(remote))  # what a user does per machine
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "init")


@pytest.fixture(scope="module")
def ops(tmp_path_factory):
    """MLflow server + Prefect server, work pool, deployments and worker, around a project copy."""
    tmp = tmp_path_factory.mktemp("ops")
    prefect_port, mlflow_port = free_port(), free_port()
    env = {
        **os.environ,
        MARK: uuid.uuid4().hex,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PWD": str(tmp / "project"),  # commands run in the project (prefect.yaml's `{{ $PWD }}`)
        "PREFECT_HOME": str(tmp / "prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp / "prefect" / "storage"),
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",  # default 10: the run starts sooner
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    ops = Ops(tmp=tmp, project=tmp / "project", env=env, mlflow_url=f"http://127.0.0.1:{mlflow_port}",
              prefect_api=env["PREFECT_API_URL"])
    (tmp / "mlflow").mkdir()
    started = time.perf_counter()
    try:
        mlflow = ops.start("mlflow", str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                           "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow' / 'mlflow.db'}",
                           "--artifacts-destination", str(tmp / "mlflow" / "artifacts"), cwd=tmp)
        server = ops.start("prefect-server", str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                           "--port", str(prefect_port), "--no-ui", cwd=tmp)
        make_project(ops.project, ops.mlflow_url, tmp / "dvc-remote", env)
        ops.wait_http(f"{ops.mlflow_url}/health", mlflow, "mlflow")
        ops.wait_http(f"{ops.prefect_api}/health", server, "prefect-server")
        # The README's commands, from the project root.
        print(f"[ops] servers up after {time.perf_counter() - started:.0f} s")
        # The README's commands, from the project root (the worker starts while deploy runs).
        ops.sh(str(BIN / "prefect"), "work-pool", "create", "stillhouse", "--type", "process")
        ops.start("prefect-worker", str(BIN / "prefect"), "worker", "start", "--pool", "stillhouse")
        ops.sh(str(BIN / "prefect"), "--no-prompt", "deploy", "--all")
        print(f"[ops] deployed after {time.perf_counter() - started:.0f} s")
        yield ops
    finally:
        stopping = time.perf_counter()
        orphans = stop_all(ops)
        print(f"[ops] stopped in {time.perf_counter() - stopping:.0f} s")
        assert not orphans, f"still running after the services were stopped: {orphans}"


def api(ops: Ops, path: str, body: dict | None = None):
    response = httpx.post(f"{ops.prefect_api}{path}", json=body or {}, timeout=30)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def pipeline_run(ops: Ops) -> dict:
    """The healthcare deployment run now, synthesis in 2 shards; its finished flow run."""
    deployment = next(d for d in api(ops, "/deployments/filter") if d["name"] == f"{DOMAIN}-weekly")
    # runs execute in the folder `prefect deploy` ran in: the temporary project, never the checkout
    assert deployment["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(ops.project)}}], deployment["pull_steps"]
    started = time.perf_counter()
    done = ops.sh(str(BIN / "prefect"), "deployment", "run", f"stillhouse/{DOMAIN}-weekly", "--param", "shards=2",
                  "--watch", "--watch-timeout", "900", check=False)
    worker_log = (ops.tmp / "prefect-worker.log").read_text()
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\nworker:\n{worker_log[-8000:]}"
    runs = api(ops, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}})
    assert len(runs) == 1, runs
    print(f"[ops] deployment run finished in {time.perf_counter() - started:.0f} s")
    return runs[0]


def test_deployment_from_prefect_yaml_runs_the_pipeline_on_a_worker(ops: Ops, pipeline_run: dict):
    deployments = {d["name"]: d for d in api(ops, "/deployments/filter")}
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert set(deployments) == {d["name"] for d in spec["deployments"]}
    for d in spec["deployments"]:
        served = deployments[d["name"]]
        assert [s["schedule"]["cron"] for s in served["schedules"]] == [s["cron"] for s in d["schedules"]]
        assert served["parameters"]["domain"] == d["parameters"]["domain"]
        assert served["work_pool_name"] == "stillhouse"
    deployment = deployments[f"{DOMAIN}-weekly"]
    assert pipeline_run["deployment_id"] == deployment["id"]
    assert pipeline_run["parameters"]["shards"] == 2
    task_runs = api(ops, "/task_runs/filter", {"flow_runs": {"id": {"any_": [pipeline_run["id"]]}}})
    shard_runs = [t for t in task_runs if t["name"].startswith("synthesize-shard")]
    assert len(shard_runs) == 2 and {t["state_type"] for t in shard_runs} == {"COMPLETED"}, task_runs
    # the shards generated every teacher output; the synthesize stage only merged them from the cache
    report = json.loads((ops.project / "data" / DOMAIN / "synthesize" / "report.json").read_text())
    assert report["this_run"]["generated"] == 0 and report["this_run"]["reused"] == report["total"]["records"] > 0
    n_in = sum(len((ops.project / "data" / DOMAIN / "deidentify" / f"{split}.jsonl").read_text().splitlines())
               for split in ("train", "test"))
    assert report["total"]["records"] == n_in
    status = json.loads(ops.sh("dvc", "status", "--json", *STAGE_NAMES).stdout.splitlines()[-1])
    assert status == {}, status
    # the server's scheduler has queued the next weekly runs: Mondays at the cron's hour, UTC
    deadline = time.monotonic() + 90
    while True:
        scheduled = [r for r in api(ops, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}})
                     if r["deployment_id"] == deployment["id"]]
        if scheduled or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert scheduled, "the scheduler created no run for the weekly schedule"
    when = datetime.fromisoformat(scheduled[0]["expected_start_time"])
    assert (when.weekday(), when.hour, when.minute, when.utcoffset().total_seconds()) == (0, 2, 0, 0)


def test_registers_on_the_mlflow_server_and_loads_back_by_alias(ops: Ops, pipeline_run: dict):
    from mlflow.pyfunc import load_model

    from tasks.register import _mlflow

    reg = json.loads((ops.project / "data" / DOMAIN / "register" / "registration.json").read_text())
    assert reg["tracking_uri"] == ops.mlflow_url and "challenger" in reg["aliases"]
    assert reg["artifact_location"].startswith("mlflow-artifacts:")  # the server stores and serves them
    assert not (ops.project / "mlartifacts").exists() and not (ops.project / "mlruns.db").exists()
    assert any((ops.tmp / "mlflow" / "artifacts").rglob("*.safetensors"))
    with _mlflow(ops.mlflow_url) as client:
        version = client.get_model_version_by_alias(MODEL, "challenger")
        assert int(version.version) == reg["version"]
        assert version.tags["gates_passed"] in {"true", "false"}
        assert client.get_run(reg["run_id"]).data.tags["domain"] == DOMAIN
        model = load_model(f"models:/{MODEL}@challenger")
        (answer,) = model.predict([NOTE], params={"max_new_tokens": 4})
    assert isinstance(answer, str)


def test_dvc_push_then_pull_restores_every_stage(ops: Ops, pipeline_run: dict):
    from dvc.repo import Repo

    with contextlib.chdir(ops.project), Repo(".") as repo:
        cached = {(o.stage.addressing, str(o.def_path)) for o in repo.index.outs
                  if o.use_cache and o.stage.addressing in STAGE_NAMES}
    assert {name.split("@")[0] for name, _ in cached} == {"deidentify", "synthesize", "condense", "distill"}
    ops.sh("dvc", "push")
    assert any(p.is_file() for p in (ops.tmp / "dvc-remote").rglob("*"))

    shutil.rmtree(ops.project / ".dvc" / "cache")
    for _, path in cached:
        target = ops.project / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    status = json.loads(ops.sh("dvc", "status", "--json", *STAGE_NAMES).stdout.splitlines()[-1])
    assert {name for name, _ in cached} <= set(status), status

    ops.sh("dvc", "pull", "--with-deps", f"register@{DOMAIN}")  # plain `dvc pull` also wants education's outputs
    status = json.loads(ops.sh("dvc", "status", "--json", *STAGE_NAMES).stdout.splitlines()[-1])
    assert status == {}, status
    assert all((ops.project / path).exists() for _, path in cached)


def test_two_runs_of_one_domain_at_once(ops: Ops, pipeline_run: dict):
    """A register-only change. Flow run A holds the domain; flow run B (--wait) waits for it and
    then finds every stage current; C, the stage runner `dvc repro` calls, refuses at once."""
    from tasks.register import _mlflow

    params = yaml.safe_load((ops.project / "params.yaml").read_text())
    params["register"]["promote_tolerance"] = 0.02
    (ops.project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = json.loads((ops.project / "data" / DOMAIN / "register" / "registration.json").read_text())["version"]
    lock = ops.project / ".cache" / "locks" / f"{DOMAIN}.lock"

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen([str(BIN / "stillhouse"), *args, "--domain", DOMAIN], cwd=ops.project, env=ops.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    a = start("run", "--wait", "600")
    deadline = time.monotonic() + 300
    while not (lock.is_file() and f'"pid": {a.pid}' in lock.read_text()):
        assert a.poll() is None, a.communicate()
        assert time.monotonic() < deadline, "run A never took the domain lock"
        time.sleep(0.5)
    b, c = start("run", "--wait", "600"), start("stage", "register")
    outs = {name: (p, *p.communicate(timeout=900)) for name, p in (("a", a), ("b", b), ("c", c))}
    for name in ("a", "b"):
        proc, out, err = outs[name]
        assert proc.returncode == 0, f"run {name}: {out[-2000:]}\n{err[-4000:]}"
        assert f"{MODEL} v{before + 1} " in out  # B, after waiting, reports A's version: it registered none
    proc, out, err = outs["c"]
    assert proc.returncode != 0
    assert f"{DOMAIN} is being run by Prefect flow run" in err and f"pid {a.pid}" in err, err[-2000:]

    # one new version: A registered it, B found every stage current; dvc.lock matches the workspace
    reg = json.loads((ops.project / "data" / DOMAIN / "register" / "registration.json").read_text())
    assert reg["version"] == before + 1
    lock_yaml = yaml.safe_load((ops.project / "dvc.lock").read_text())
    assert lock_yaml["stages"][f"register@{DOMAIN}"]["params"]["params.yaml"]["register"]["promote_tolerance"] == 0.02
    status = json.loads(ops.sh("dvc", "status", "--json", *STAGE_NAMES).stdout.splitlines()[-1])
    assert status == {}, status
    for path in (ops.project / "data" / DOMAIN).rglob("*.jsonl"):
        [json.loads(line) for line in path.read_text().splitlines()]  # every line whole
    with _mlflow(ops.mlflow_url) as client:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))
        assert versions == list(range(1, before + 2))
        assert int(client.get_model_version_by_alias(MODEL, "challenger").version) == before + 1
        assert client.get_run(reg["run_id"]).info.status == "FINISHED"


def test_domain_lock_fails_fast_waits_and_is_freed_by_a_kill(tmp_path: Path):
    """Real processes contend for flows.locks.domain_lock."""
    hold = ("import sys; from flows.locks import domain_lock\n"
            "with domain_lock(sys.argv[1], 'healthcare', holder='holder'):\n"
            "    print('held', flush=True); sys.stdin.read()")  # until the test closes stdin (or kills it)
    take = ("import sys; from flows.locks import domain_lock, DomainBusy\n"
            "try:\n"
            "    with domain_lock(sys.argv[1], 'healthcare', wait=float(sys.argv[2])): print('got it')\n"
            "except DomainBusy as e: sys.exit(str(e))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def holder() -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path)], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "held"
        return p

    def taker(wait: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", take, str(tmp_path), wait], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    first = holder()
    refused = taker("0")
    _, err = refused.communicate(timeout=60)
    assert refused.returncode != 0 and f"healthcare is being run by holder (pid {first.pid}" in err, err
    waiting = taker("120")
    time.sleep(3)
    assert waiting.poll() is None  # still waiting while the holder holds
    first.stdin.close()  # the holder lets go
    out, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 0 and "got it" in out
    first.wait(timeout=10)

    killed = holder()
    killed.kill()
    killed.wait()
    after = taker("0")
    out, _ = after.communicate(timeout=60)
    assert after.returncode == 0 and "got it" in out  # the kernel dropped the dead holder's lock
