"""params.yaml is the single config: it validates, rejects typos, and matches what DVC tracks."""

from __future__ import annotations

import importlib

import pytest
import yaml
from pydantic import ValidationError

from conftest import ROOT
from tasks.params import STAGES, Params, load_params


def test_params_yaml_validates():
    params = load_params(ROOT / "params.yaml")
    assert set(params.domains) == {"healthcare", "education"}


def test_unknown_key_is_an_error():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["distill"]["temprature"] = 1.0
    with pytest.raises(ValidationError, match="temprature"):
        Params.model_validate(raw)


def test_unknown_domain_is_an_error():
    with pytest.raises(ValueError, match="unknown domain"):
        load_params(ROOT / "params.yaml").domain("finance")


def test_stage_sections_set_every_field_explicitly():
    """DVC tracks params.yaml values, not code defaults: every knob a stage reads must be written out."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section in STAGES:
        model = type(getattr(load_params(ROOT / "params.yaml"), section))
        missing = set(model.model_fields) - set(raw[section])
        assert not missing, f"params.yaml [{section}] leaves {missing} to code defaults"


def test_dvc_stage_params_match_what_each_stage_reads():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for stage in STAGES:
        module = importlib.import_module(f"tasks.{stage}")
        declared = {p.replace("{domain}", "${item}") for p in module.PARAMS}
        assert set(dvc["stages"][stage]["do"]["params"]) == declared, stage
        assert f"tasks/{stage}.py" in dvc["stages"][stage]["do"]["deps"], stage
