"""Register stage: the student as an MLflow model version, promoted only when its gates pass.

    stillhouse stage register --domain healthcare       # what `dvc repro register@healthcare` runs
    stillhouse promote --domain healthcare [--version N]
    stillhouse ask --domain healthcare "Clinical note: ..."

Reads  data/<domain>/distill/{student/, metrics.json, history.csv}
       data/<domain>/fairness/{report.json, report.md, metrics.json, fairness.png}
       data/<domain>/deidentify/audit.json (counts only, never PHI), synthesize/report.json,
       condense/report.json, guard/report.json (when present), dvc.lock (lineage) and the git
       commit of the project folder
Writes an MLflow run (params, metrics, reports, lineage.json, gates.json, model_card/README.md,
       tags) in experiment `register.experiment`, a version of registered model
       `register.model_name` (its model folder holds the card too) with alias `challenger` (and
       `champion` when the promotion rule allows), data/<domain>/register/model_card.md and
       data/<domain>/register/registration.json (where it all is).
Params register.model_name, experiment ("{domain}" is filled in), tracking_uri (relative
       sqlite paths are under the project folder; MLFLOW_TRACKING_URI wins), artifact_root (the
       experiment's artifact location, set when the experiment is created; against an http(s)
       tracking server only a URI is used, else the server's --artifacts-destination keeps them),
       min_student_accuracy (the quality gate), promote_tolerance, license (the card's, unless
       the teacher's own is known).

Refusal: when guard/report.json says `"passed": false` (a leak), nothing is registered; and the
run's logged artifacts are scanned again by the leak guard (`tasks.guard.check_tree`; files the
guard already passed, by SHA-256, are skipped) before the
model version is created, so a leak into an MLflow artifact fails the run, unregistered.

Promotion follows MLflow's alias workflow (champion / challenger): every new version becomes
the challenger. `champion` moves to it, at registration or later through `promote()`, only if
(1) every gate passed: quality (student accuracy >= min_student_accuracy) and fairness (the
fairness report's `all_passed`), and (2) its primary metric (held-out student accuracy) beats or
ties the current champion's within `promote_tolerance`. Otherwise champion stays where it was.
Each decision is tagged on the version (`stillhouse.promotion`: "promoted: ..." or
"refused: gate fairness.race.accuracy_gap failed") and on the registered model
(`stillhouse.last_promotion`), so the registry itself tells why a model serves.

The whole `params.yaml` config in force is logged as run params for the record. Only
`register` changes what this stage computes; the other sections reach it through the upstream
outputs it depends on, so dvc.yaml declares `register` alone.

The model is logged with MLflow's transformers flavor (task text-generation) and a prompt
template, so `mlflow.pyfunc.load_model("models:/<name>@champion").predict([text])` takes the
record text alone and answers it in the same chat format the student is evaluated with.
Nothing here touches the network: the model card is written locally instead of fetched.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import yaml

from domains import get_domain
from domains.base import Domain
from tasks.params import Params, Register, stage_dir
from tasks.records import write_json

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # MLflow reads it per call: a stage phones no one

PARAMS = ("register",)  # the params.yaml keys this stage computes with (dvc.yaml lists the same)
CHAMPION, CHALLENGER = "champion", "challenger"
MAX_NEW_TOKENS = 48  # served default: an answer and a short rationale; callers override per call
PINNED = ("torch", "transformers", "tokenizers", "safetensors", "accelerate")  # the model's runtime
# Reports logged as run artifacts: (stage, file) -> folder in the run's artifacts.
REPORTS = (
    ("deidentify", "audit.json"),
    ("synthesize", "report.json"),
    ("condense", "report.json"),
    ("fairness", "report.json"),
    ("fairness", "report.md"),
    ("fairness", "fairness.png"),
    ("distill", "metrics.json"),
    ("distill", "history.csv"),
    ("distill", "eval.csv"),
)


PRIMARY_METRIC = "student_accuracy"  # what a challenger must beat or tie to replace the champion
EPS = 1e-9  # float tolerance on the promotion comparison
PROMOTION_TAG = "stillhouse.promotion"  # on the version: the latest decision about it, with its reason


class PromotionRefused(ValueError):
    """`champion` was not moved: a gate failed, no gates were recorded, or the champion is better."""


class GuardFailed(ValueError):
    """register refused: the leak guard's report says `passed: false`."""


# ---- where things are ---------------------------------------------------------------------------


def tracking_uri(cfg: Register, root: Path) -> str:
    """MLFLOW_TRACKING_URI if set, else `register.tracking_uri`; relative sqlite/file paths under root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking_uri
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        return "sqlite:///" + str(path if path.is_absolute() else (Path(root) / path).resolve())
    if "://" not in uri and not uri.startswith("file:"):  # a bare folder: MLflow's file store
        path = Path(uri)
        return (path if path.is_absolute() else Path(root) / path).resolve().as_uri()
    return uri


def artifact_location(cfg: Register, root: Path, uri: str = "") -> str | None:
    """A new experiment's artifact location: `artifact_root` (relative: under root). Against a
    tracking server (`uri` http[s]://) a folder is the server's business: None lets the server's
    `--artifacts-destination` hold the artifacts and serve them to every client."""
    if "://" in cfg.artifact_root:
        return cfg.artifact_root
    if uri.startswith(("http://", "https://")):
        return None
    path = Path(cfg.artifact_root)
    return (path if path.is_absolute() else Path(root) / path).resolve().as_uri()


def ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {uri} (the tracking server's UI)"
    return f"mlflow ui --backend-store-uri {uri}"


def model_name(cfg: Register, domain: str) -> str:
    return cfg.model_name.format(domain=domain)


# ---- pure helpers -------------------------------------------------------------------------------


def flat_params(params: Params, domain: str) -> dict[str, str]:
    """`params.yaml` in force for this domain, flattened to dotted keys (`distill.lr` -> "0.0001")."""
    sections = {"domain": params.domain(domain).model_dump(), "domain_name": domain}
    sections.update({name: getattr(params, name).model_dump() for name in type(params).model_fields if name != "domains"})
    flat: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and value:
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        else:
            flat[prefix] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)

    walk("", sections)
    return flat


def numeric(metrics: dict, prefix: str) -> dict[str, float]:
    """Numbers of a (possibly nested) metrics dict as `prefix.key` floats; nulls and text skipped."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(numeric(value, f"{prefix}.{key}"))
        elif isinstance(value, (int, float)) and not math.isnan(value):  # bools count as 0/1
            out[f"{prefix}.{key}"] = float(value)
    return out


def lineage(lock: dict | None, domain: str, commit: str) -> dict:
    """This domain's upstream stages from dvc.lock: command, params and md5 of every dep and out."""
    keep = ("path", "hash", "md5", "size", "nfiles")
    stages = {}
    for name, entry in ((lock or {}).get("stages") or {}).items():
        stage, _, item = name.partition("@")
        if item != domain or stage == "register":  # register's own entry is the previous run's
            continue
        stages[stage] = {
            "name": name,
            "cmd": entry.get("cmd"),
            "deps": [{k: d[k] for k in keep if k in d} for d in entry.get("deps", [])],
            "params": entry.get("params", {}),
            "outs": [{k: o[k] for k in keep if k in o} for o in entry.get("outs", [])],
        }
    return {"domain": domain, "git_commit": commit, "dvc_lock": lock is not None, "stages": stages}


def gates(student_accuracy: float | None, accuracy_source: str, cfg: Register, fairness: dict) -> dict:
    """Quality and fairness gate results; `all_passed` decides champion."""
    quality_ok = student_accuracy is not None and student_accuracy >= cfg.min_student_accuracy
    quality = {
        "passed": quality_ok,
        "value": student_accuracy,
        "threshold": cfg.min_student_accuracy,
        "source": accuracy_source,
        "reason": (f"student accuracy {student_accuracy:.3f} {'>=' if quality_ok else '<'} "
                   f"{cfg.min_student_accuracy:.3f}" if student_accuracy is not None else "student accuracy unknown"),
    }
    failed = list(fairness.get("failed", []))
    not_evaluable = list(fairness.get("not_evaluable", []))
    fair_ok = bool(fairness.get("all_passed"))
    reason = f"fairness gates failed for {', '.join(failed)}" if failed else "every evaluable attribute passed"
    if not fair_ok and not failed:
        reason = "fairness report says all_passed is false"
    if not_evaluable:
        reason += f" (not evaluable, not gated: {', '.join(not_evaluable)})"
    fair = {"passed": fair_ok, "failed": failed, "not_evaluable": not_evaluable, "reason": reason}
    fair_failed = [f"fairness.{g}" for g in fairness.get("failed_gates") or failed]
    if not fair_ok and not fair_failed:
        fair_failed = ["fairness.all_passed"]
    failed_gates = ([] if quality_ok else ["quality.min_student_accuracy"]) + fair_failed
    return {"quality": quality, "fairness": fair, "all_passed": quality_ok and fair_ok, "failed_gates": failed_gates}


def decide(gates_passed: bool, failed_gates: list[str], value: float | None, champion: str | None,
           champion_value: float | None, tolerance: float) -> tuple[bool, str]:
    """Whether `champion` may move to a challenger, and why: every gate passed, and its primary
    metric >= the current champion's - tolerance (a champion without a recorded metric never blocks)."""
    if not gates_passed:
        return False, f"refused: gate {', '.join(failed_gates) or '(unrecorded)'} failed"
    if champion is None:
        return True, "promoted: every gate passed; no champion before"
    if champion_value is None:
        return True, f"promoted: every gate passed; champion v{champion} has no recorded {PRIMARY_METRIC}"
    if value is None:
        return False, f"refused: no {PRIMARY_METRIC} recorded to compare with champion v{champion}"
    floor = champion_value - tolerance
    if value >= floor - EPS:
        return True, (f"promoted: every gate passed; {PRIMARY_METRIC} {value:.4f} >= champion v{champion} "
                      f"{champion_value:.4f} - tolerance {tolerance:g}")
    return False, (f"refused: {PRIMARY_METRIC} {value:.4f} < champion v{champion} {champion_value:.4f} "
                   f"- tolerance {tolerance:g}")


def step_series(root: Path, domain: str) -> list[tuple[str, float, int]]:
    """distill's history.csv and eval.csv as (metric key, value, step) for MLflow's per-step charts."""
    series = []
    for file, prefix in (("history.csv", "distill.train"), ("eval.csv", "distill.heldout")):
        path = stage_dir(root, domain, "distill") / file
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                step, split = int(row.pop("step")), row.pop("split", None)
                for key, value in row.items():
                    if value not in ("", None):
                        series.append((f"{prefix}.{split + '.' if split else ''}{key}", float(value), step))
    return series


def check_guard(root: Path, domain: str) -> dict | None:
    """The leak guard's report when present; GuardFailed when it says passed=false."""
    path = Path(root) / "data" / domain / "guard" / "report.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    if report.get("passed") is not True:
        leaks = report.get("leaks") or []
        raise GuardFailed(f"register: refused: {path} says passed={report.get('passed')} "
                          f"({len(leaks)} leak(s)); nothing registered, champion untouched")
    return report


def student_prompt(spec: Domain, tok, text: str) -> str:
    """The student's input for one record text: distill's "[label]" prompt, so the served
    model sees exactly what it was trained and evaluated on."""
    from tasks.distillation.examples import task_prompt

    return task_prompt(spec, tok, {"text": text})


def prompt_template(spec: Domain, tok) -> str:
    """`student_prompt` with `{prompt}` where the text goes, other braces escaped (MLflow formats it)."""
    mark = "\x00STILLHOUSE_TEXT\x00"
    rendered = student_prompt(spec, tok, mark)
    return rendered.replace("{", "{{").replace("}", "}}").replace(mark, "{prompt}")


def format_answer(spec: Domain, text: str) -> str:
    parsed = spec.parse_answer(text)
    return f"answer: {parsed if parsed is not None else '(none parsed)'}\nmodel output: {text.strip() or '(empty)'}"


def _pins() -> list[str]:
    pins = []
    for package in PINNED:
        try:
            pins.append(f"{package}=={metadata.version(package).split('+')[0]}")  # 2.13.0+cpu -> 2.13.0
        except metadata.PackageNotFoundError:
            pass
    return pins


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- files and processes -------------------------------------------------------------------------


def git_commit(root: Path) -> str:
    """HEAD of the project folder, `+dirty` when tracked files differ; "unknown" outside git."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], check=False, cwd=root, capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def read_lock(root: Path) -> dict | None:
    path = Path(root) / "dvc.lock"
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"register: {path} is missing (run the earlier stages first)")
    return json.loads(path.read_text())


@contextmanager
def _mlflow(uri: str):
    """MLflow pointed at `uri` for the block, then the previous URIs (and env vars) restored.

    `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI; left behind, it would override
    the next caller's `register.tracking_uri` (another domain, another test's folder).
    """
    import mlflow
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved = (getattr(tracking_utils, "_tracking_uri", None), getattr(registry_utils, "_registry_uri", None))
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _aliases(client, name: str, version: str) -> list[str]:
    return sorted(client.get_model_version(name, version).aliases)


def _alias_version(client, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)  # int or str by store
    except MlflowException:
        return None


def _log_student(student: Path, spec: Domain, name: str, card):
    """Log and register the student with the transformers flavor; returns MLflow's ModelInfo.

    `card` (a huggingface_hub ModelCard) is written into the model folder by MLflow; without one
    MLflow would ask the hub for the base model's card.
    """
    import mlflow
    from mlflow.models import infer_signature
    from transformers import AutoModelForCausalLM

    from tasks.models import load_tokenizer

    path = str(student.resolve())  # an absolute path is never mistaken for a hub repo id
    model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")  # the dtype distill saved
    tok = load_tokenizer(path)
    return mlflow.transformers.log_model(
        transformers_model={"model": model, "tokenizer": tok},
        name="student",
        task="text-generation",
        registered_model_name=name,
        prompt_template=prompt_template(spec, tok),
        model_config={"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False, "add_special_tokens": False},
        signature=infer_signature(["record text"], ["answer"], params={"max_new_tokens": MAX_NEW_TOKENS}),
        model_card=card,
        pip_requirements=_pins(),  # explicit: inferring them imports optional packages (torchvision)
        metadata={"domain": spec.name, "input": "the record text alone; the prompt template adds the question"},
    )


def _primary(client, name: str, version: str | None) -> float | None:
    """The primary metric recorded on a version's tags (None when absent or not a number)."""
    if version is None:
        return None
    try:
        return float(client.get_model_version(name, version).tags.get(f"stillhouse.{PRIMARY_METRIC}", ""))
    except ValueError:
        return None


def _record_decision(client, name: str, version: str, previous: str | None, moved: bool, reason: str) -> str:
    """Tag the decision on the version and the model; move the alias only for a promotion."""
    stamped = f"{reason} ({_now()})"
    client.set_model_version_tag(name, version, PROMOTION_TAG, stamped)
    client.set_registered_model_tag(name, "stillhouse.last_promotion", f"v{version} {stamped}")
    if moved:
        client.set_registered_model_alias(name, CHAMPION, version)
        if previous and previous != version:
            client.set_model_version_tag(name, previous, "champion_replaced",
                                         f"champion moved to version {version} ({_now()})")
    return stamped


# ---- the stage ------------------------------------------------------------------------------------


def main(domain: str, params: Params, root: Path) -> dict:
    """Log the run, register the student, move the aliases the rule allows; write registration.json."""
    import mlflow
    from mlflow.entities import Metric

    from tasks.model_card import model_card

    started = time.perf_counter()
    root = Path(root)
    guard = check_guard(root, domain)  # a leak stops everything before the registry is touched
    spec = get_domain(domain)
    cfg = params.register
    name = model_name(cfg, domain)
    uri = tracking_uri(cfg, root)
    student = stage_dir(root, domain, "distill") / "student"
    if not (student / "config.json").is_file():
        raise FileNotFoundError(f"register: no student model in {student}")
    fairness_report = _read_json(stage_dir(root, domain, "fairness") / "report.json")
    fairness_metrics = _read_json(stage_dir(root, domain, "fairness") / "metrics.json")
    distill_path = stage_dir(root, domain, "distill") / "metrics.json"
    distill_metrics = json.loads(distill_path.read_text()) if distill_path.is_file() else {}
    audit_path = stage_dir(root, domain, "deidentify") / "audit.json"
    audit = json.loads(audit_path.read_text()) if audit_path.is_file() else None

    # The quality gate reads distill's held-out student accuracy, else fairness's (same rows).
    if isinstance(distill_metrics.get("student_accuracy"), (int, float)):
        accuracy, source = float(distill_metrics["student_accuracy"]), "distill/metrics.json"
    else:
        accuracy, source = fairness_metrics.get("student_accuracy"), "fairness/metrics.json"
    g = gates(accuracy, source, cfg, fairness_report)
    commit = git_commit(root)
    lin = lineage(read_lock(root), domain, commit)
    card = model_card(name=name, domain=domain, spec=spec, params=params, fairness=fairness_report,
                      distill=distill_metrics, audit=audit, lineage=lin, gates=g, license=cfg.license)
    out = stage_dir(root, domain, "register")
    out.mkdir(parents=True, exist_ok=True)
    (out / "model_card.md").write_text(str(card), encoding="utf-8")
    metrics = {**numeric(distill_metrics, "distill"), **numeric(fairness_metrics, "fairness")}
    metrics["gates.all_passed"] = float(g["all_passed"])
    missing = []

    with _mlflow(uri) as client:
        experiment = cfg.experiment.format(domain=domain)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(
            experiment, artifact_location=artifact_location(cfg, root, uri))
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{domain}-{commit[:8]}") as run:
            mlflow.log_params(flat_params(params, domain))
            mlflow.log_metrics(metrics)
            # every loss term (unweighted and weighted) and the held-out loss per step, for MLflow's charts
            now = int(time.time() * 1000)
            per_step = [Metric(k, v, now, step) for k, v, step in step_series(root, domain)]
            for i in range(0, len(per_step), 1000):  # log_batch takes at most 1000 metrics
                client.log_batch(run.info.run_id, metrics=per_step[i:i + 1000])
            for stage, file in REPORTS:
                path = stage_dir(root, domain, stage) / file
                if path.is_file():
                    mlflow.log_artifact(str(path), artifact_path=stage)
                else:
                    missing.append(f"{stage}/{file}")
            if guard is not None:
                mlflow.log_dict(guard, "guard/report.json")
            mlflow.log_dict(lin, "lineage.json")
            mlflow.log_dict(g, "gates.json")
            mlflow.log_text(str(card), "model_card/README.md")
            mlflow.set_tags({
                "domain": domain,
                "teacher": params.synthesize.teacher,
                "git_commit": commit,
                "gates": "passed" if g["all_passed"] else "failed",
                "gate.quality": "passed" if g["quality"]["passed"] else "failed",
                "gate.fairness": "passed" if g["fairness"]["passed"] else "failed",
            })
            # the pipeline ran de-identification and its leak guard: the run's artifacts too, before any version
            if guard is not None and (stage_dir(root, domain, "deidentify") / "canaries.json").is_file():
                from tasks import guard as leak_guard

                with tempfile.TemporaryDirectory() as tmp:
                    logged = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=tmp)
                    leak_guard.check_tree(Path(logged), spec, params, root, leak_guard.verified_hashes(guard))
            info = _log_student(student, spec, name, card)
        version = str(info.registered_model_version)
        run_id = run.info.run_id
        with tempfile.TemporaryDirectory() as tmp:  # the card as README.md in the model folder too
            readme = Path(tmp) / "README.md"
            readme.write_text(str(card), encoding="utf-8")
            client.log_model_artifact(info.model_id, str(readme))

        previous = _alias_version(client, name, CHAMPION)
        tags = {
            "domain": domain,
            "git_commit": commit,
            "gate.quality": "passed" if g["quality"]["passed"] else "failed",
            "gate.fairness": "passed" if g["fairness"]["passed"] else "failed",
            "gates_passed": str(g["all_passed"]).lower(),
            "stillhouse.failed_gates": json.dumps(g["failed_gates"]),
            "gates": json.dumps(g)[:5000],
            f"stillhouse.{PRIMARY_METRIC}": "" if accuracy is None else repr(float(accuracy)),
            "challenger_reason": f"{_now()}: newest version, registered by run {run_id}",
        }
        for key, value in tags.items():  # gate results first: no alias ever points at an untagged version
            client.set_model_version_tag(name, version, key, value)
        client.set_registered_model_alias(name, CHALLENGER, version)
        promoted, reason = decide(g["all_passed"], g["failed_gates"], accuracy, previous,
                                  _primary(client, name, previous), cfg.promote_tolerance)
        reason = _record_decision(client, name, version, previous, promoted, f"{reason} [at registration]")
        aliases = _aliases(client, name, version)
        champion = _alias_version(client, name, CHAMPION)
        location = client.get_experiment(experiment_id).artifact_location

    registration = {
        "domain": domain,
        "model_name": name,
        "version": int(version),
        "run_id": run_id,
        "model_id": info.model_id,  # MLflow 3 logged model: its folder holds the weights and README.md
        "experiment": experiment,
        "tracking_uri": uri,
        "artifact_location": location,
        "aliases": aliases,
        "champion_version": int(champion) if champion else None,
        "gates": g,
        "promoted": promoted,
        "promotion": reason,
        "model_uri": f"models:/{name}@{CHAMPION if promoted else CHALLENGER}",
        "model_card": str(out / "model_card.md"),
        "ui_command": ui_command(uri),
        "git_commit": commit,
        "lineage_stages": sorted(lin["stages"]),
        "missing_artifacts": missing,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(out / "registration.json", registration)
    return {k: registration[k] for k in ("model_name", "version", "aliases", "promoted", "model_uri", "promotion")}


def promote(domain: str, params: Params, root: Path, version: str | int | None = None) -> dict:
    """Move `champion` to `version` (default: the challenger) if the promotion rule allows.

    The rule (see `decide`): every gate recorded on the version passed, and its primary metric
    beats or ties the champion's within `register.promote_tolerance`. A refusal is tagged on the
    version and raises PromotionRefused; champion stays where it was. Idempotent on the champion.
    """
    from mlflow.exceptions import MlflowException

    cfg = params.register
    name = model_name(cfg, domain)
    with _mlflow(tracking_uri(cfg, Path(root))) as client:
        if version is None:
            version = _alias_version(client, name, CHALLENGER)
            if version is None:
                raise ValueError(f"promote: {name} has no `{CHALLENGER}` version; run the register stage first")
        version = str(version)
        try:
            tags = client.get_model_version(name, version).tags
        except MlflowException as err:
            raise ValueError(f"promote: {name} has no version {version}") from err
        previous = _alias_version(client, name, CHAMPION)
        if previous == version:
            reason = f"already champion ({_now()})"
        else:
            failed = json.loads(tags.get("stillhouse.failed_gates") or "[]") or (
                [] if "gates_passed" in tags else ["(no gate results recorded)"])
            promoted, why = decide(tags.get("gates_passed") == "true", failed, _primary(client, name, version),
                                   previous, _primary(client, name, previous), cfg.promote_tolerance)
            reason = _record_decision(client, name, version, previous, promoted, f"{why} [by hand]")
            if not promoted:
                raise PromotionRefused(f"promote: {name} version {version} not promoted: {reason}; "
                                       f"champion stays on version {previous or 'none'}")
        return {"model_name": name, "version": int(version), "previous_champion": int(previous) if previous else None,
                "aliases": _aliases(client, name, version), "reason": reason,
                "model_uri": f"models:/{name}@{CHAMPION}"}


def answer(domain: str, params: Params, root: Path, text: str, alias: str = CHALLENGER,
           max_new_tokens: int = MAX_NEW_TOKENS) -> str:
    """Ask the registered model (by alias) about one record text; the parsed answer and raw output."""
    import mlflow
    from mlflow.exceptions import MlflowException

    spec = get_domain(domain)
    name = model_name(params.register, domain)
    with _mlflow(tracking_uri(params.register, Path(root))):
        try:
            model = mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
        except MlflowException as err:
            raise ValueError(f"ask: no {name}@{alias} in the registry ({err.message.splitlines()[0]})") from err
        (output,) = model.predict([text], params={"max_new_tokens": max_new_tokens})
    return format_answer(spec, str(output))
