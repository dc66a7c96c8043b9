"""Register stage: MLflow (SQLite in tmp_path) run, model version with its model card, aliases moved
only when every gate passes and the challenger beats or ties the champion; a guard failure registers nothing."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import yaml
from test_fairness import rows, tiny_student, toy_domain  # noqa: F401 (a fixture)

from tasks import fairness, register
from tasks.params import DomainParams, Fairness, Params, Register
from tasks.records import write_json, write_jsonl

NAME = "stillhouse-toy"


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
def project(tmp_path: Path, tiny_student: Path, monkeypatch) -> Path:  # noqa: F811 (the imported fixture)
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
    (data / "distill/eval.csv").write_text("step,split,loss,ppl\n0,test,2.5,12.2\n2,val,1.9,6.7\n2,test,1.8,6.0\n")
    write_json(data / "deidentify/audit.json", {"in": 40, "out": 40, "quarantined": 0, "entities": {"PERSON": 40}})
    write_json(data / "synthesize/report.json", {"kept": 30, "teacher": "tiny"})
    write_json(data / "condense/report.json", {"kept": 24, "method": "kcenter"})
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(SAMPLE_LOCK))
    write_predictions(tmp_path, biased=False)
    return tmp_path


def write_predictions(root: Path, biased: bool, accuracy: float = 0.75) -> None:
    """predictions.jsonl, then the real fairness stage: its outputs are register's inputs."""
    student = {("F", "a"): (20, 16, 20), ("M", "a"): (20, 16, 4)} if biased else {
        ("F", "a"): (20, 16, 15), ("M", "a"): (20, 16, 15)}
    write_jsonl(root / "data/toy/distill/predictions.jsonl", rows(student))
    fairness.main("toy", toy_params(), root)
    write_json(root / "data/toy/distill/metrics.json", {"student_accuracy": accuracy, "teacher_accuracy": 0.8,
                                                       "student": {"loss": 1.5, "perplexity": 4.5}})


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
    assert version.tags["gates_passed"] == "true" and version.tags["stillhouse.student_accuracy"] == "0.75"
    assert version.tags["stillhouse.promotion"].startswith("promoted: every gate passed; no champion before")
    assert client.get_registered_model(NAME).tags["stillhouse.last_promotion"].startswith("v1 promoted:")
    run = client.get_run(reg["run_id"])
    assert run.data.tags["domain"] == "toy" and run.data.tags["gates"] == "passed"
    assert run.data.tags["git_commit"] == "unknown"  # tmp_path is no git repository
    assert run.data.params["distill.steps"] == str(params.distill.steps) and run.data.params["domain_name"] == "toy"
    assert run.data.metrics["distill.student_accuracy"] == 0.75 and run.data.metrics["distill.student.loss"] == 1.5
    assert run.data.metrics["fairness.gates_passed"] == 1.0
    # distill's history.csv, per step: one point per row, charted against the step
    assert [(m.step, m.value) for m in client.get_metric_history(reg["run_id"], "distill.train.kd")] == [(1, 1.0), (2, 0.8)]
    assert [(m.step, m.value) for m in client.get_metric_history(reg["run_id"], "distill.heldout.test.loss")] == [
        (0, 2.5), (2, 1.8)]
    logged = {a.path for a in client.list_artifacts(reg["run_id"])}
    assert {"lineage.json", "gates.json", "model_card", "deidentify", "synthesize", "condense", "fairness",
            "distill"} <= logged
    assert {a.path for a in client.list_artifacts(reg["run_id"], "fairness")} == {
        "fairness/report.json", "fairness/report.md", "fairness/fairness.png"}
    assert {a.path for a in client.list_artifacts(reg["run_id"], "deidentify")} == {"deidentify/audit.json"}

    # The model card: in the project, in the run, and in the registered model's own folder.
    card = (project / "data/toy/register/model_card.md").read_text()
    assert reg["model_card"] == str(project / "data/toy/register/model_card.md")
    model_files = {Path(a.path).name for a in client.list_logged_model_artifacts(reg["model_id"])}
    assert {"README.md", "model_card.md", "model_card_data.yaml"} <= model_files
    readme = Path(client.download_artifacts(reg["run_id"], "model_card/README.md", str(project))).read_text()
    assert readme == card

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


def test_gates_decide_champion_and_promote_refuses_failing_versions(project: Path, capsys):
    import mlflow

    from flows import cli

    params = toy_params()
    uri = f"sqlite:///{project / 'mlruns.db'}"
    client = mlflow.MlflowClient(uri, uri)

    def champion() -> str:
        return str(client.get_model_version_by_alias(NAME, "champion").version)

    def decision(version: str) -> str:
        return client.get_model_version(NAME, version).tags["stillhouse.promotion"]

    register.main("toy", params, project)  # v1: passes -> champion
    write_predictions(project, biased=True)
    reg2 = register.main("toy", params, project)  # v2: fairness fails -> challenger only
    assert reg2["aliases"] == ["challenger"] and not reg2["promoted"]
    assert reg2["model_uri"] == f"models:/{NAME}@challenger"
    assert champion() == "1"
    v2 = client.get_model_version(NAME, "2").tags
    assert v2["gate.fairness"] == "failed" and v2["gates_passed"] == "false"
    assert decision("2").startswith("refused: gate fairness.sex.accuracy_gap, fairness.sex.amplification")
    assert "[at registration]" in decision("2")

    with pytest.raises(register.PromotionRefused, match="version 2 not promoted: refused: gate fairness.sex"):
        register.promote("toy", params, project)  # default: the challenger (v2)
    assert champion() == "1" and "[by hand]" in decision("2")  # the failing gate left champion untouched
    (project / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    with pytest.raises(SystemExit, match="not promoted: refused: gate fairness.sex.accuracy_gap"):
        cli.main(["--root", str(project), "promote", "--domain", "toy"])  # `stillhouse promote` says why
    assert champion() == "1"

    write_predictions(project, biased=False)
    reg3 = register.main("toy", toy_params(min_student_accuracy=0.9), project)  # v3: quality fails (0.75 < 0.9)
    assert reg3["aliases"] == ["challenger"] and champion() == "1"
    assert decision("3").startswith("refused: gate quality.min_student_accuracy failed")

    reg4 = register.main("toy", params, project)  # v4: passes and ties v1 (0.75) -> champion moves
    assert reg4["aliases"] == ["challenger", "champion"] and champion() == "4"
    assert "0.7500 >= champion v1 0.7500 - tolerance 0.01" in decision("4")
    assert "champion moved to version 4" in client.get_model_version(NAME, "1").tags["champion_replaced"]

    # v5: every gate passes but accuracy 0.70 trails the champion's 0.75 by more than 0.01: refused.
    write_predictions(project, biased=False, accuracy=0.70)
    reg5 = register.main("toy", params, project)
    assert not reg5["promoted"] and champion() == "4"
    assert decision("5").startswith("refused: student_accuracy 0.7000 < champion v4 0.7500 - tolerance 0.01")
    with pytest.raises(register.PromotionRefused):
        register.promote("toy", params, project, version=5)
    assert champion() == "4"
    # Within a wider tolerance the same version may replace the champion, and the tag says why.
    moved = register.promote("toy", toy_params(promote_tolerance=0.1), project, version=5)
    assert moved["previous_champion"] == 4 and champion() == "5"
    assert moved["reason"].startswith("promoted: every gate passed; student_accuracy 0.7000 >= champion v4")
    assert client.get_registered_model(NAME).tags["stillhouse.last_promotion"].startswith("v5 promoted:")

    back = register.promote("toy", params, project, version=1)  # roll back to a passing, better version
    assert back["version"] == 1 and back["previous_champion"] == 5 and back["aliases"] == ["champion"]
    assert champion() == "1"
    assert register.promote("toy", params, project, version="1")["reason"].startswith("already champion")
    cli.main(["--root", str(project), "promote", "--domain", "toy", "--version", "1"])
    assert json.loads(capsys.readouterr().out)["reason"].startswith("already champion")
    with pytest.raises(ValueError, match="has no version 9"):
        register.promote("toy", params, project, version=9)


def test_failed_guard_registers_nothing(project: Path):
    import mlflow

    write_json(project / "data/toy/guard/report.json", {"passed": False, "leaks": [{"entity": "NAME", "value": "J***"}]})
    with pytest.raises(register.GuardFailed, match="passed=False .1 leak.s..; nothing registered"):
        register.main("toy", toy_params(), project)
    assert not (project / "mlruns.db").exists()  # refused before the registry was even opened
    assert not (project / "data/toy/register/registration.json").exists()
    uri = f"sqlite:///{project / 'mlruns.db'}"
    client = mlflow.MlflowClient(uri, uri)
    write_json(project / "data/toy/guard/report.json", {"passed": True, "leaks": []})
    reg = register.main("toy", toy_params(), project)  # a passing guard is logged with the run
    assert reg["version"] == 1
    assert "guard/report.json" in {a.path for a in client.list_artifacts(
        json.loads((project / "data/toy/register/registration.json").read_text())["run_id"], "guard")}


def test_decide_promotion_rule():
    assert register.decide(False, ["fairness.race.eo_difference"], 0.9, "1", 0.5, 0.01) == (
        False, "refused: gate fairness.race.eo_difference failed")
    assert register.decide(True, [], 0.5, None, None, 0.01)[0]
    assert register.decide(True, [], 0.74, "3", 0.75, 0.01)[0]  # within tolerance: a tie
    ok, why = register.decide(True, [], 0.7399, "3", 0.75, 0.01)
    assert not ok and why.startswith("refused: student_accuracy 0.7399 < champion v3 0.7500")
    assert register.decide(True, [], None, "3", 0.75, 0.01)[0] is False
    assert register.decide(True, [], 0.1, "3", None, 0.01)[0]  # an old champion without a metric never blocks


def test_model_card_is_hugging_face_format(project: Path):
    from huggingface_hub import ModelCard

    from tasks.model_card import model_card, prompt_hash

    spec = register.get_domain("toy")
    fair = json.loads((project / "data/toy/fairness/report.json").read_text())
    lin = register.lineage(SAMPLE_LOCK, "toy", "abc123")
    g = register.gates(0.75, "distill/metrics.json", Register(), fair)
    audit = {"records": {"in": 40, "out": 38, "quarantined": 2}, "entities": {"PERSON": 40, "DATE": 12},
             "operator": "surrogate"}
    card = model_card(name=NAME, domain="toy", spec=spec, params=toy_params(), fairness=fair,
                      distill={"student_accuracy": 0.75, "teacher_accuracy": 0.8, "student": {"loss": 1.5}},
                      audit=audit, lineage=lin, gates=g, license="other")
    text = str(card)
    front = yaml.safe_load(text.split("---")[1])
    assert front["license"] == "apache-2.0"  # the default teacher's GGUF metadata names its license
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and front["language"] == ["en"]
    assert {"stillhouse", "toy", "knowledge-distillation"} <= set(front["tags"])
    assert front["datasets"] == ["stillhouse-toy-synthetic"]
    results = front["model-index"][0]["results"]
    assert {m["type"] for r in results for m in r["metrics"]} >= {"accuracy", "worst_group_accuracy", "accuracy_gap"}
    back = ModelCard(text).data  # huggingface_hub parses it back
    assert back.model_name == NAME and back.eval_results[0].metric_value == 0.75
    for section in ("## Intended use", "## Lineage", "## Evaluation", "### Per group", "## De-identification audit",
                    "## Limitations"):
        assert section in text
    assert f"`{prompt_hash(spec)}`" in text and "git commit: `abc123`" in text and "`bb22.dir`" in text
    assert "quarantined 2" in text and "PERSON 40" in text and "| F | 20 |" in text


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
    failing = register.gates(0.4, "x", cfg, {"all_passed": False, "failed": ["sex"], "failed_gates": ["sex.dp_difference"]})
    assert failing["failed_gates"] == ["quality.min_student_accuracy", "fairness.sex.dp_difference"]
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
