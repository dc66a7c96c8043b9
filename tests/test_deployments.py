"""prefect.yaml: one scheduled deployment per domain, each pointing at the real flow with valid parameters.

tests/test_operations.py deploys the same file to a real Prefect server and runs it."""

from __future__ import annotations

import inspect

import yaml
from prefect.schedules import Cron

from conftest import ROOT
from domains import NAMES
from flows.pipeline import pipeline
from tasks.params import load_params


def test_each_domain_has_a_scheduled_deployment_of_the_pipeline_flow():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = spec["deployments"]
    assert {d["parameters"]["domain"] for d in deployments} == set(NAMES)
    flow_params = set(inspect.signature(pipeline.fn).parameters)
    params = load_params(ROOT / "params.yaml")
    for d in deployments:
        path, _, name = d["entrypoint"].partition(":")
        assert (ROOT / path).is_file() and name == pipeline.fn.__name__
        assert set(d["parameters"]) <= flow_params, d["name"]
        params.domain(d["parameters"]["domain"])
        assert d["schedules"] and all(Cron(s["cron"], s.get("timezone")) for s in d["schedules"])
        assert d["concurrency_limit"] == 1  # runs of one domain share its data and dvc.lock
        assert d["parameters"].get("shards", 1) >= 1 and d["parameters"].get("lock_wait", 0) >= 0
    # runs execute in the folder `prefect deploy` ran in, where params.yaml, dvc.yaml and data/ are
    assert spec["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $PWD }}"}}]
