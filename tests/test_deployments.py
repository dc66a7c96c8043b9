"""prefect.yaml: one scheduled deployment per domain, each pointing at the real flow with valid parameters."""

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
