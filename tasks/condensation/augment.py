"""Generative augmentation: the teacher writes new records for under-represented strata.

A stratum (a label, or one value of one sensitive attribute) with fewer than `target` records
gets `target - n_s` new ones. Each is asked of the teacher (`tasks.models.sample`, temperature
AUG_TEMPERATURE, seeded) with a few real records of that stratum as in-context examples (Wang et
al., 2023, "Self-Instruct"; for group-balanced augmentation e.g. Yu et al., 2023, "Large Language
Model as Attributed Training Data Generator"). The new record takes the label and groups of its
first example, with the stratum's value set.

Then the same filters as real records: the domain's label check, empty or over-long text
(`deidentify.max_chars`), de-identification with `tasks.deidentify.deidentify` (the teacher may
copy an identifier from its examples or invent one), and, back in condense, de-duplication
against everything else. Survivors carry `"synthetic": true` and `provenance` (teacher, stratum,
example ids, seed); they have no teacher rationale (`rationale: None`, `kept: False`). Rejected
ones are counted by reason, never written.
"""

from __future__ import annotations

import random
from collections import Counter

from tasks import models

AUG_TEMPERATURE = 0.8
N_EXAMPLES = 3  # in-context examples per request
MAX_NEW_TOKENS = 160
MISSING = "(missing)"


def shortfalls(rows: list[dict], attributes: tuple[str, ...], target: int) -> dict[tuple[str, str], int]:
    """{(kind, value): records missing to reach `target`} for labels and sensitive-attribute values."""
    counts: Counter = Counter()
    for r in rows:
        counts[("label", str(r.get("label")))] += 1
        groups = r.get("groups") or {}
        for a in attributes:
            if groups.get(a) not in (None, ""):
                counts[(a, str(groups[a]))] += 1
    return {s: target - n for s, n in sorted(counts.items()) if n < target}


def prompt(domain_name: str, stratum: tuple[str, str], examples: list[dict]) -> str:
    kind, value = stratum
    want = f"label {value!r}" if kind == "label" else f"{kind} {value!r}"
    shown = "\n\n".join(f"Record (label: {e.get('label')}):\n{e.get('text', '')}" for e in examples)
    return (f"Here are {len(examples)} de-identified {domain_name} records.\n\n{shown}\n\n"
            f"Write one new, different, realistic record of the same kind with {want}. "
            "Invent no names, dates, places or numbers that identify anyone. Reply with the record text only.")


def requests(rows: list[dict], attributes: tuple[str, ...], target: int, seed: int = 0) -> list[dict]:
    """One request per missing record: {stratum, examples (rows), label, groups}."""
    rng = random.Random(seed)
    out = []
    for (kind, value), missing in shortfalls(rows, attributes, target).items():
        members = [r for r in rows if (str(r.get("label")) == value if kind == "label"
                                       else str((r.get("groups") or {}).get(kind)) == value)]
        for j in range(missing):
            examples = rng.sample(members, min(N_EXAMPLES, len(members)))
            groups = dict(examples[0].get("groups") or {})
            if kind != "label":
                groups[kind] = value
            out.append({"stratum": (kind, value), "index": j, "examples": examples,
                        "label": value if kind == "label" else examples[0].get("label"), "groups": groups})
    return out


def augment(rows: list[dict], domain, attributes: tuple[str, ...], target: int, teacher_spec: str,
            deid_config, seed: int = 0, model=None, tok=None) -> tuple[list[dict], Counter]:
    """New synthetic rows (de-identified, marked) and rejections by reason."""
    asks = requests(rows, attributes, target, seed)
    if not asks:
        return [], Counter()
    if model is None:
        path = models.resolve_model(teacher_spec)
        tok, model = models.load_tokenizer(path), models.load_causal_lm(path, "float32")
    import torch

    prompts = [models.chat_prompt(tok, prompt(domain.name, a["stratum"], a["examples"])) for a in asks]
    torch.manual_seed(seed)  # sampling is seeded: the same rows for the same seed
    outs = models.sample(model, tok, prompts, n=1, temperature=AUG_TEMPERATURE, max_new_tokens=MAX_NEW_TOKENS,
                         desc="augment")
    return finish(asks, [o["samples"][0]["text"] for o in outs], domain, deid_config, teacher_spec, seed)


def finish(asks: list[dict], texts: list[str], domain, deid_config, teacher_spec: str, seed: int = 0
           ) -> tuple[list[dict], Counter]:
    """The real records' filters on the teacher's texts, then de-identification and the marks."""
    from tasks.deidentify import deidentify

    rejected: Counter = Counter()
    candidates = []
    for a, text in zip(asks, texts, strict=True):
        text = (text or "").strip()
        kind, value = a["stratum"]
        if domain.labels and domain.normalize_label(str(a["label"])) is None:
            rejected["unknown_label"] += 1
        elif not text:
            rejected["empty_text"] += 1
        elif len(text) > deid_config.max_chars:
            rejected["too_long"] += 1
        else:
            candidates.append({
                "id": f"{domain.name}-synthetic-{kind}-{value}-{a['index']:03d}".replace(" ", "_"),
                "text": text, "label": a["label"], "groups": a["groups"],
                "provenance": {"method": "teacher-augment", "teacher": teacher_spec, "stratum": f"{kind}={value}",
                               "examples": [e["id"] for e in a["examples"]], "seed": seed,
                               "temperature": AUG_TEMPERATURE},
            })
    if not candidates:
        return [], rejected
    clean, _, _ = deidentify(domain, [{k: c[k] for k in ("id", "text", "label", "groups")} for c in candidates],
                             deid_config)
    out = [{**d, "split": "train", "teacher_output": None, "teacher_answer": None, "rationale": None, "kept": False,
            "synthetic": True, "provenance": c["provenance"]} for c, d in zip(candidates, clean, strict=True)]
    return out, rejected
