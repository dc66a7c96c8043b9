"""Register stage: MLflow (SQLite in tmp_path) run, model version, aliases moved only by passing gates."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import yaml
from test_fairness import rows, toy_domain

from tasks import fairness, register
from tasks.params import DomainParams, Fairness, Params, Register
from tasks.records import write_json, write_jsonl

NAME = "stillhouse-toy"


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory) -> Path:
    """A 38k-parameter llama and a byte-level BPE tokenizer trained in a second, saved like distill does."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["Note: the patient says yes. Answer one of: yes, no? Answer: yes"] * 20, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("student")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


SAMPLE_LOCK = {
    "schema": "2.0",
    "stages": {
        "distill@toy": {
            "cmd": "stillhouse stage distill --domain toy",
            "deps": [{"path": "data/toy/condense/train.jsonl", "hash": "md5", "md5": "aa11", "size": 10}],
            "params": {"params.yaml": {"distill": {"steps": 3}}},
            "outs": [{"path": "data/toy/distill/student", "hash": "md5", "md5": "bb22.dir", "size": 99, "nfiles": 5}],
        },
        "fairness@toy": {"cmd": "stillhouse stage fairness --domain toy",
                         "deps": [{"path": "data/toy/distill/predictions.jsonl", "md5": "cc33", "size": 5}],
                         "outs": [{"path": "data/toy/fairness/report.json", "md5": "dd44", "size": 7}]},
        "register@toy": {"cmd": "stillhouse stage register --domain toy", "deps": [], "outs": []},
        "distill@other": {"cmd": "x", "deps": [], "outs": []},
    },
}


@pytest.fixture
def project(tmp_path: Path, tiny_student: Path, monkeypatch) -> Path:
    """A project folder with every register input in the stage schemas (fair, accurate student)."""
    spec = toy_domain(tmp_path)
    monkeypatch.setattr(register, "get_domain", lambda name: spec)
    monkeypatch.setattr(fairness, "get_domain", lambda name: spec)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = tmp_path / "data/toy"
    shutil.copytree(tiny_student, data / "distill/student")
    write_json(data / "distill/metrics.json", {"student_accuracy": 0.75, "teacher_accuracy": 0.8,
                                              "student": {"loss": 1.5, "perplexity": 4.5}})
    (data / "distill/history.csv").write_text("step,loss,kd,ce\n1,2.0,1.0,3.0\n2,1.5,0.8,2.2\n")
    write_json(data / "deidentify/audit.json", {"in": 40, "out": 40, "quarantined": 0, "entities": {"PERSON": 40}})
    write_json(data / "synthesize/report.json", {"kept": 30, "teacher": "tiny"})
    write_json(data / "condense/report.json", {"kept": 24, "method": "kcenter"})
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(SAMPLE_LOCK))
    write_predictions(tmp_path, biased=False)
    return tmp_path


def write_predictions(root: Path, biased: bool) -> None:
    """predictions.jsonl, then the real fairness stage: its outputs are register's inputs."""
    student = {("F", "a"): (20, 16, 20), ("M", "a"): (20, 16, 4)} if biased else {
        ("F", "a"): (20, 16, 15), ("M", "a"): (20, 16, 15)}
    write_jsonl(root / "data/toy/distill/predictions.jsonl", rows(student))
    fairness.main("toy", toy_params(), root)


def toy_params(**register_kw) -> Params:
    # Relative tracking URI and artifact root: both must land under the project folder.
    cfg = {"tracking_uri": "sqlite:///mlruns.db", "artifact_root": "mlartifacts", **register_kw}
    return Params(domains={"toy": DomainParams()}, fairness=Fairness(min_group_size=10),
                  register=Register(**cfg))


@pytest.fixture
def no_network(monkeypatch) -> list:
    """Records every attempt to open an IP connection (MLflow and HF swallow their own errors)."""
    attempts: list = []
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError(f"test: network is off ({address})")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


def test_register_passing_student_is_challenger_and_champion_and_answers(project: Path, no_network: list):
    import mlflow

    params = toy_params()
    summary = register.main("toy", params, project)
    assert no_network == [], f"register tried the network: {no_network}"

    reg = json.loads((project / "data/toy/register/registration.json").read_text())
    assert summary["version"] == reg["version"] == 1
    assert reg["model_name"] == NAME and reg["aliases"] == ["challenger", "champion"] and reg["promoted"]
    assert reg["model_uri"] == f"models:/{NAME}@champion"
    assert reg["tracking_uri"] == f"sqlite:///{project / 'mlruns.db'}"
    assert reg["ui_command"] == f"mlflow ui --backend-store-uri sqlite:///{project / 'mlruns.db'}"
    assert reg["artifact_location"] == (project / "mlartifacts").as_uri()
    assert reg["gates"]["quality"]["source"] == "distill/metrics.json" and reg["gates"]["all_passed"]
    assert reg["lineage_stages"] == ["distill", "fairness"] and reg["missing_artifacts"] == []
    assert (project / "mlruns.db").is_file() and any((project / "mlartifacts").iterdir())
    assert "MLFLOW_TRACKING_URI" not in __import__("os").environ  # the stage left no global state

    client = mlflow.MlflowClient(reg["tracking_uri"], reg["tracking_uri"])
    version = client.get_model_version(NAME, "1")
    assert version.tags["gates_passed"] == "true" and "all gates passed" in version.tags["champion_reason"]
    run = client.get_run(reg["run_id"])
    assert run.data.tags["domain"] == "toy" and run.data.tags["gates"] == "passed"
    assert run.data.tags["git_commit"] == "unknown"  # tmp_path is no git repository
    assert run.data.params["distill.steps"] == str(params.distill.steps) and run.data.params["domain_name"] == "toy"
    assert run.data.metrics["distill.student_accuracy"] == 0.75 and run.data.metrics["distill.student.loss"] == 1.5
    assert run.data.metrics["fairness.gates_passed"] == 1.0
    logged = {a.path for a in client.list_artifacts(reg["run_id"])}
    assert {"lineage.json", "gates.json", "deidentify", "synthesize", "condense", "fairness", "distill"} <= logged
    assert {a.path for a in client.list_artifacts(reg["run_id"], "fairness")} == {
        "fairness/report.json", "fairness/fairness.png"}

    lineage = json.loads(Path(client.download_artifacts(reg["run_id"], "lineage.json", str(project))).read_text())
    assert set(lineage["stages"]) == {"distill", "fairness"}  # this domain, upstream of register only
    assert lineage["stages"]["distill"]["outs"] == [
        {"path": "data/toy/distill/student", "hash": "md5", "md5": "bb22.dir", "size": 99, "nfiles": 5}]
    assert lineage["stages"]["distill"]["params"] == {"params.yaml": {"distill": {"steps": 3}}}

    mlflow.set_tracking_uri(reg["tracking_uri"])
    try:
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@challenger")
        (text,) = model.predict(["the patient says yes"], params={"max_new_tokens": 6})
    finally:
        mlflow.set_tracking_uri(None)
        __import__("os").environ.pop("MLFLOW_TRACKING_URI", None)
    assert isinstance(text, str) and "Note:" not in text  # the answer only, not the templated prompt
    said = register.answer("toy", params, project, "the patient says yes", alias="champion", max_new_tokens=6)
    assert said.startswith("answer: ") and "model output: " in said


def test_gates_decide_champion_and_promote_refuses_failing_versions(project: Path):
    import mlflow

    params = toy_params()
    uri = f"sqlite:///{project / 'mlruns.db'}"
    client = mlflow.MlflowClient(uri, uri)

    register.main("toy", params, project)  # v1: passes -> champion
    write_predictions(project, biased=True)
    reg2 = register.main("toy", params, project)  # v2: fairness fails -> challenger only
    assert reg2["aliases"] == ["challenger"] and not reg2["promoted"]
    assert reg2["model_uri"] == f"models:/{NAME}@challenger"
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    v2 = client.get_model_version(NAME, "2").tags
    assert v2["gate.fairness"] == "failed" and v2["gates_passed"] == "false"
    assert "fairness gates failed for sex" in v2["champion_withheld_reason"] and "version 1" in v2["champion_withheld_reason"]

    with pytest.raises(register.PromotionRefused, match="version 2 not promoted"):
        register.promote("toy", params, project)  # default: the challenger (v2)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert "refused" in client.get_model_version(NAME, "2").tags["champion_refused_reason"]

    write_predictions(project, biased=False)
    reg3 = register.main("toy", toy_params(min_student_accuracy=0.9), project)  # v3: quality fails (0.75 < 0.9)
    assert reg3["aliases"] == ["challenger"]
    assert client.get_model_version(NAME, "3").tags["gate.quality"] == "failed"

    reg4 = register.main("toy", params, project)  # v4: passes -> champion moves
    assert reg4["aliases"] == ["challenger", "champion"]
    assert "champion moved to version 4" in client.get_model_version(NAME, "1").tags["champion_replaced"]

    back = register.promote("toy", params, project, version=1)  # roll back to a passing version
    assert back["version"] == 1 and back["previous_champion"] == 4 and back["aliases"] == ["champion"]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert "promoted by hand from version 4" in client.get_model_version(NAME, "1").tags["champion_reason"]
    assert register.promote("toy", params, project, version="1")["reason"].endswith("already champion")
    with pytest.raises(ValueError, match="has no version 9"):
        register.promote("toy", params, project, version=9)


def test_lineage_keeps_this_domains_upstream_stages_only():
    lin = register.lineage(SAMPLE_LOCK, "toy", "abc123")
    assert lin["git_commit"] == "abc123" and lin["dvc_lock"] is True
    assert set(lin["stages"]) == {"distill", "fairness"}
    assert lin["stages"]["fairness"]["deps"] == [{"path": "data/toy/distill/predictions.jsonl", "md5": "cc33", "size": 5}]
    assert register.lineage(None, "toy", "unknown") == {
        "domain": "toy", "git_commit": "unknown", "dvc_lock": False, "stages": {}}


def test_tracking_uri_is_rooted_and_the_environment_wins(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = Register()
    assert register.tracking_uri(cfg, tmp_path) == f"sqlite:///{tmp_path / 'mlruns.db'}"
    assert register.tracking_uri(Register(tracking_uri="sqlite:////abs/x.db"), tmp_path) == "sqlite:////abs/x.db"
    assert register.tracking_uri(Register(tracking_uri="mlruns"), tmp_path) == (tmp_path / "mlruns").as_uri()
    assert register.artifact_location(cfg, tmp_path) == (tmp_path / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert register.tracking_uri(cfg, tmp_path) == "http://127.0.0.1:5000"


def test_gates_and_flat_params():
    cfg = Register(min_student_accuracy=0.5)
    fair = {"all_passed": True, "failed": [], "not_evaluable": ["race"]}
    g = register.gates(0.6, "distill/metrics.json", cfg, fair)
    assert g["all_passed"] and "not evaluable, not gated: race" in g["fairness"]["reason"]
    assert not register.gates(0.4, "x", cfg, fair)["all_passed"]
    assert not register.gates(None, "x", cfg, fair)["quality"]["passed"]
    assert not register.gates(0.9, "x", cfg, {"all_passed": False, "failed": ["sex"]})["all_passed"]
    flat = register.flat_params(toy_params(), "toy")
    assert flat["domain.source.kind"] == "synthetic" and flat["fairness.min_group_size"] == "10"
    assert flat["register.model_name"] == "stillhouse-{domain}"
    assert register.numeric({"a": 1, "b": {"c": 2.5, "d": None}, "e": "x", "f": True}, "p") == {
        "p.a": 1.0, "p.b.c": 2.5, "p.f": 1.0}


def test_prompt_template_escapes_braces_and_keeps_one_slot(tmp_path: Path):
    class Tok:
        chat_template = None

    spec = toy_domain(tmp_path)
    (spec.templates / "question.txt").write_text('Note {{json}}:\n{text}\nOne of: {labels}?')
    template = register.prompt_template(spec, Tok())
    assert template.format(prompt="HELLO") == "User: [label] Note {json}:\nHELLO\nOne of: yes, no?\nAssistant: "
