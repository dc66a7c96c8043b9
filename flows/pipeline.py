"""The Stillhouse pipeline as a Prefect flow: the same seven stages `dvc repro` runs.

    stillhouse run --domain healthcare            # this flow, local temporary Prefect server
    prefect deploy --all                          # scheduled deployments from prefect.yaml

Each stage is a Prefect task that calls the stage's `main()` from `tasks/`, then records the
stage in `dvc.lock` (flows/dvc_lock.py), so DVC stays the one cache owner: stages that DVC
sees as unchanged are skipped, and after a run `dvc status` is clean.
Retries sit only on the stages that can fail transiently (teacher calls, the registry).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.dvc_lock import is_current, record, stage_name
from tasks import condense, deidentify, distill, fairness, guard, register, synthesize
from tasks.params import STAGES, load_params, stage_dir

STAGE_MAIN = {
    "deidentify": deidentify.main,
    "synthesize": synthesize.main,
    "condense": condense.main,
    "distill": distill.main,
    "fairness": fairness.main,
    "guard": guard.main,
    "register": register.main,
}
RETRIES = {"synthesize": 2, "register": 2}  # transient: teacher server, registry database


@contextlib.contextmanager
def stage_log(root: str | Path, domain: str, stage: str):
    """Copy the stage's log records to logs/<domain>/<stage>.log (rewritten each run): the guard
    scans these files, so an identifier that reaches a log message stops the pipeline too."""
    path = Path(root) / "logs" / domain / f"{stage}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root_logger = logging.getLogger()
    # a handler on the root logger silences Python's last-resort stderr output: keep warnings on screen
    handlers = [handler] + ([logging.lastResort] if not root_logger.handlers and logging.lastResort else [])
    for h in handlers:
        root_logger.addHandler(h)
    try:
        yield
    finally:
        for h in handlers:
            root_logger.removeHandler(h)
        handler.close()


def run_stage(stage: str, domain: str, params_path: str, root: str, force: bool) -> dict:
    """Run one stage unless DVC says it is current; record it in dvc.lock either way."""
    logger = get_run_logger()
    name = stage_name(stage, domain)
    if not force and is_current(root, name):
        logger.info("%s unchanged (dvc.lock is current): skipped", name)
        return {"skipped": True}
    params = load_params(Path(root) / params_path)
    with stage_log(root, domain, stage):
        summary = STAGE_MAIN[stage](domain, params, Path(root))
    record(root, name)
    logger.info("%s done: %s", name, summary)
    return summary


@flow(name="stillhouse", log_prints=True)
def pipeline(
    domain: str = "healthcare",
    params_path: str = "params.yaml",
    root: str = ".",
    force: bool = False,
) -> dict:
    """De-identify, synthesize rationales, condense, distill, check fairness, register."""
    root = os.path.abspath(root)
    load_params(Path(root) / params_path).domain(domain)  # fail fast on a bad config or domain
    summaries = {}
    for stage in STAGES:
        stage_task = task(run_stage, name=stage, retries=RETRIES.get(stage, 0), retry_delay_seconds=10)
        summaries[stage] = stage_task(stage, domain, params_path, root, force)
    create_markdown_artifact(
        key=f"stillhouse-{domain}",
        markdown=summary_markdown(domain, Path(root)),
        description=f"Stillhouse run for {domain}",
    )
    fairness_md = stage_dir(Path(root), domain, "fairness") / "report.md"
    if fairness_md.is_file():  # gates, per-group metrics with CIs and probes on the run's Artifacts tab
        create_markdown_artifact(key=f"stillhouse-{domain}-fairness", markdown=fairness_md.read_text(),
                                 description=f"Fairness report for {domain}")
    return summaries


def summary_markdown(domain: str, root: Path) -> str:
    """Where the registered model, the fairness report and the MLflow UI are."""
    reg = json.loads((stage_dir(root, domain, "register") / "registration.json").read_text())
    report = stage_dir(root, domain, "fairness") / "report.json"
    return "\n".join(
        [
            f"# Stillhouse: {domain}",
            f"- registered model: `{reg['model_name']}` version {reg['version']} "
            f"(aliases: {', '.join(reg['aliases']) or 'none'})",
            f"- load it: `{reg['model_uri']}`",
            f"- promoted to champion: {reg['promoted']} ({reg.get('promotion', '')})",
            f"- fairness report: `{report}`",
            f"- MLflow UI: `{reg['ui_command']}`",
        ]
    )
