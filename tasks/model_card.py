"""The registered student's model card: a Hugging Face README.md (YAML front matter + Markdown).

    from tasks.model_card import model_card
    card = model_card(name=..., domain=..., ...)      # huggingface_hub.ModelCard; str(card) is README.md

Front matter (Hugging Face model card spec, https://huggingface.co/docs/hub/model-cards):
license, language, tags, base_model, datasets and `model-index` with the held-out metrics.
Body (Mitchell et al., 2019, "Model Cards for Model Reporting"): intended use, lineage (git
commit, teacher, prompt hash, dvc.lock hashes), overall and per-group metrics with the gates,
the de-identification audit (counts only, never a record) and limitations. Pure: the register
stage gathers the inputs and writes the file.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from domains.base import Domain
from tasks.params import Params

_QUANT = re.compile(r"[.-](?:Q\d\w*|IQ\d\w*|F16|F32|BF16)$", re.IGNORECASE)  # "SmolLM2-135M-Instruct.Q4_1" -> base name


def prompt_hash(spec: Domain) -> str:
    """sha256 of the domain's prompt templates: a changed prompt is a different model."""
    h = hashlib.sha256()
    for path in sorted(Path(spec.templates).glob("*.txt")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def teacher_info(teacher: str) -> dict:
    """base_model (a hub id) and license of the teacher, where they can be known offline.

    A hub id is its own base model. A GGUF teacher carries `general.organization` and
    `general.license` in its metadata; its file name minus the quantisation suffix is the repo
    name (the llama.cpp convention: `SmolLM2-135M-Instruct.Q4_1.gguf`). Anything else: unknown.
    """
    from tasks.models import _gguf_path

    gguf = _gguf_path(teacher)
    if gguf is None:
        local = Path(teacher).exists()
        hub = not local and re.fullmatch(r"[\w.-]+/[\w.-]+", teacher) is not None
        return {"base_model": teacher if hub else None, "license": None}
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields

    def text(key: str) -> str | None:
        try:
            return str(fields[key].contents()) if key in fields else None
        except (ValueError, IndexError, TypeError):
            return None

    org, base = text("general.organization"), _QUANT.sub("", Path(gguf).stem)
    return {"base_model": f"{org}/{base}" if org else None, "license": text("general.license")}


def _datasets(params: Params, domain: str) -> list[str]:
    source = params.domain(domain).source
    if source.kind == "hub":
        return [source.hub_id]
    return [f"stillhouse-{domain}-{'synthetic' if source.kind == 'synthetic' else 'own-records'}"]


def _f(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _groups_table(attr: str, r: dict) -> list[str]:
    lines = [(f"**{attr}** — student accuracy gap {_f(r.get('student_gap'))} (teacher {_f(r.get('teacher_gap'))}, "
              f"amplification {_f(r.get('amplification'))}); status: {r['status']}"), "",
             "| group | n | teacher accuracy | student accuracy [95% CI] |", "|---|---|---|---|"]
    for g, v in r["groups"].items():
        ci = v.get("student_accuracy_ci")
        lines.append(f"| {g}{' (not gated: small)' if v['too_small'] else ''} | {v['n']} | {_f(v['teacher_accuracy'])} | "
                     f"{_f(v['student_accuracy'])}{f' [{ci[0]:.2f}, {ci[1]:.2f}]' if ci else ''} |")
    return lines + [""]


def model_card(*, name: str, domain: str, spec: Domain, params: Params, fairness: dict, distill: dict,
               audit: dict | None, lineage: dict, gates: dict, license: str) -> ModelCard:
    """The card for one registered version (inputs are the stage reports register reads)."""
    teacher = params.synthesize.teacher
    info = teacher_info(teacher)
    overall = fairness.get("overall", {})
    accuracy = distill.get("student_accuracy", overall.get("student_accuracy"))
    task_type = "text-classification" if spec.labels else "text-generation"
    dataset = {"dataset_type": f"stillhouse/{domain}", "dataset_name": f"{domain} held-out set", "task_type": task_type}
    results = [EvalResult(metric_type="accuracy", metric_name="student accuracy (held-out)",
                          metric_value=float(accuracy or 0.0), **dataset)]
    for attr, r in fairness.get("attributes", {}).items():
        for key, kind in (("student_worst_group_accuracy", "worst_group_accuracy"), ("student_gap", "accuracy_gap")):
            if r.get(key) is not None:
                results.append(EvalResult(metric_type=kind, metric_name=f"{kind.replace('_', ' ')} ({attr})",
                                          metric_value=float(r[key]), **dataset))
    data = ModelCardData(
        license=info["license"] or license, language=["en"], library_name="transformers",
        pipeline_tag="text-generation", base_model=info["base_model"], datasets=_datasets(params, domain),
        tags=["stillhouse", domain, "knowledge-distillation", "fairness-audited", "de-identified-training-data"],
        model_name=name, eval_results=results,
    )
    phash = prompt_hash(spec)
    verdict = "all gates passed" if gates.get("all_passed") else "gates FAILED: " + ", ".join(gates.get("failed_gates", []))
    body = [
        f"# {name}", "",
        (f"Stillhouse student for **{domain}**: {spec.task}. Distilled (knowledge distillation with teacher "
         f"rationales, Hsieh et al., 2023) from teacher `{teacher}`; gates at registration: **{verdict}**."), "",
        "## Intended use", "",
        (f"Decision support for {domain} staff who review every answer: {spec.task.lower()}. Input is one "
         "de-identified record text; the output is an answer (and, on request, a short rationale)."), "",
        ("Out of scope: autonomous clinical or educational decisions, records that still carry identifiers, "
         "languages other than English, populations unlike the training data (see the per-group metrics)."), "",
        "## Lineage", "",
        f"- git commit: `{lineage.get('git_commit', 'unknown')}`",
        f"- teacher: `{teacher}`" + (f" (base model `{info['base_model']}`)" if info["base_model"] else ""),
        f"- prompt hash (sha256 of `domains/{domain}/templates/*.txt`): `{phash}`",
        f"- dvc.lock: {'recorded' if lineage.get('dvc_lock') else 'absent (stages run outside DVC)'}", "",
    ]
    if lineage.get("stages"):
        body += ["| stage | output | md5 |", "|---|---|---|"]
        for stage, entry in lineage["stages"].items():
            body += [f"| {stage} | `{o.get('path')}` | `{o.get('md5', '')}` |" for o in entry.get("outs", [])]
        body.append("")
    body += ["## Evaluation (held-out set)", "", "| metric | student | teacher |", "|---|---|---|",
             f"| accuracy | {_f(accuracy)} | {_f(distill.get('teacher_accuracy', overall.get('teacher_accuracy')))} |"]
    for key in ("loss", "perplexity"):
        if isinstance(distill.get("student"), dict) and key in distill["student"]:
            teacher_value = distill.get("teacher", {}).get(key) if isinstance(distill.get("teacher"), dict) else None
            body.append(f"| {key} | {_f(distill['student'][key])} | {_f(teacher_value)} |")
    body += ["", "### Per group", ""]
    for attr, r in fairness.get("attributes", {}).items():
        body += _groups_table(attr, r)
    cf = fairness.get("counterfactual", {})
    if cf.get("status") == "run":
        body += ["### Counterfactual probes", "", "| cue swapped | pairs | answer flip rate |", "|---|---|---|"]
        body += [f"| {p} | {v['n']} | {_f(v['flip_rate'])} |" for p, v in cf["probes"].items()] + [""]
    body += ["### Gates", "", f"- quality: {gates.get('quality', {}).get('reason', '–')}",
             f"- fairness: {gates.get('fairness', {}).get('reason', '–')}", ""]
    body += ["## De-identification audit", ""]
    if audit:  # counts and settings only: audit.json never holds a record or an identifier
        for key in ("records", "split", "entities", "canaries"):
            if isinstance(audit.get(key), dict) and audit[key]:
                body.append(f"- {key}: " + ", ".join(f"{k} {v}" for k, v in audit[key].items()))
        for key in ("operator", "score_threshold", "presidio_analyzer", "spacy_model"):
            if audit.get(key) is not None:
                body.append(f"- {key}: {audit[key]}")
    else:
        body.append("- no audit.json found")
    body += ["", "## Limitations", "",
             "- A small student distilled from a small teacher: accuracy is far below a clinician's or a teacher's.",
             ("- Fairness is measured only for the recorded attributes "
              f"({', '.join(spec.sensitive_attributes)}) and their pairs; groups below "
              f"{params.fairness.min_group_size} records gate only on decisive confidence intervals."),
             ("- Counterfactual probes swap surface cues (names, pronouns, stated attributes); they do not prove "
              "the absence of proxy discrimination."),
             "- Trained on de-identified text: de-identification lowers but does not remove re-identification risk.",
             "- The teacher's license and use policy apply to this student."]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")
