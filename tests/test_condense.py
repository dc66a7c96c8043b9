"""Condense: exact budget, every group and label kept, deterministic per seed, fast at 10,000 rows."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tasks import condense as cz
from tasks.params import Condense, Params
from tasks.records import read_jsonl, write_jsonl

ATTRS = ("sex", "race", "age_band")
SYMPTOMS = {
    "cardiac": ["crushing chest pain radiating to the left arm", "palpitations and troponin elevation",
                "ST elevation on ECG", "exertional chest tightness", "new murmur and edema"],
    "respiratory": ["productive cough and fever", "wheezing and shortness of breath", "hypoxia on room air",
                    "crackles at the right base", "pleuritic pain with infiltrate on x-ray"],
    "gastrointestinal": ["epigastric pain after meals", "melena and anemia", "right lower quadrant tenderness",
                         "vomiting and diarrhea for two days", "elevated lipase"],
    "neurological": ["sudden left-sided weakness", "slurred speech and facial droop", "new-onset seizure",
                     "worst headache of life", "numbness in both feet"],
}
HISTORY = ["hypertension", "type 2 diabetes", "asthma", "GERD", "migraine", "atrial fibrillation", "no history"]


def make_rows(n: int, seed: int = 0, rationale_share: float = 0.6, rare: bool = True) -> list[dict]:
    """Rows in the synthesize output schema (record + teacher fields), healthcare-like.

    With `rare`, one race value has only 3 records and one label only 4: coverage must keep them.
    """
    rng = random.Random(seed)
    labels = list(SYMPTOMS)
    rows = []
    for i in range(n):
        label = labels[-1] if rare and i < 4 else rng.choice(labels[:-1] if rare else labels)
        race = "Other" if rare and i in (5, 6, 7) else rng.choice(["White", "Black", "Hispanic", "Asian"])
        text = (f"{rng.randint(18, 95)} yo presents with {rng.choice(SYMPTOMS[label])} and "
                f"{rng.choice(SYMPTOMS[label])}. PMH: {rng.choice(HISTORY)}. Vitals: HR {rng.randint(55, 130)}, "
                f"BP {rng.randint(95, 180)}/{rng.randint(55, 100)}.")
        correct = rng.random() < rationale_share
        rationale = f"The note describes {text.split(' with ')[1].split('.')[0]}, which points to a {label} cause."
        answer = label if correct else rng.choice([x for x in labels if x != label])
        rows.append({
            "id": f"r{i:05d}",
            "text": text,
            "label": label,
            "groups": {"sex": rng.choice(["F", "M"]), "race": race, "age_band": rng.choice(["18-39", "40-64", "65+"])},
            "teacher_output": (rationale if correct else "Unclear.") + f"\nAnswer: {answer}",
            "teacher_answer": answer,
            "correct": correct,
            "rationale": rationale if correct else None,
            "kept": correct,
        })
    return rows


def params(method: str = "kcenter", ratio: float = 0.5, seed: int = 0) -> Condense:
    return Condense(method=method, ratio=ratio, seed=seed)


@pytest.mark.parametrize("method", ["random", "kcenter"])
@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.75, 1.0])
def test_exact_size_and_every_group_and_label_kept(method, ratio):
    rows = make_rows(300)
    kept, report = cz.run(rows, ATTRS, params(method, ratio))
    assert len(kept) == round(ratio * 300) == report["n_after"]
    assert len({r["id"] for r in kept}) == len(kept)
    assert report["unmet_quotas"] == {}
    before, after = report["before"], report["after"]
    assert set(after["labels"]) == set(before["labels"])
    for attr in ATTRS:
        assert set(after["groups"][attr]) == set(before["groups"][attr])
        for value, n in before["groups"][attr].items():
            assert after["groups"][attr][value] >= report["quotas"][f"{attr}={value}"]
            assert after["groups"][attr][value] >= min(n, cz.MIN_PER_STRATUM, int(ratio * n) - 2)
    for label, n in before["labels"].items():  # at 0.1 the label quotas sum to 32: trimmed to the 30 kept
        assert after["labels"][label] >= report["quotas"][f"label={label}"] >= min(n, int(ratio * n) - 2)
    assert after["labels"]["neurological"] == 4  # the rare label (4 records) is kept whole
    assert after["groups"]["race"]["Other"] == 3  # the rare group (3 records) is kept whole
    assert after["kept_rationale"] >= min(before["kept_rationale"], int(ratio * before["kept_rationale"]))


def test_rows_are_unchanged_and_in_input_order():
    rows = make_rows(120)
    kept, _ = cz.run(rows, ATTRS, params("kcenter", 0.4))
    by_id = {r["id"]: r for r in rows}
    assert all(r == by_id[r["id"]] for r in kept)
    positions = [int(r["id"][1:]) for r in kept]
    assert positions == sorted(positions)


@pytest.mark.parametrize("method", ["random", "kcenter"])
def test_deterministic_for_the_seed(method):
    rows = make_rows(200)
    ids = lambda p: [r["id"] for r in cz.run(rows, ATTRS, p)[0]]  # noqa: E731
    assert ids(params(method, 0.5, 0)) == ids(params(method, 0.5, 0))
    assert ids(params(method, 0.5, 0)) != ids(params(method, 0.5, 1))


def test_kcenter_differs_from_random_and_covers_better():
    rows = make_rows(400, rare=False)
    _, rnd = cz.run(rows, ATTRS, params("random", 0.25))
    _, kc = cz.run(rows, ATTRS, params("kcenter", 0.25))
    assert kc["diversity"]["cover_radius"] < rnd["diversity"]["cover_radius"]
    assert kc["diversity"]["mean_nn_distance_after"] > rnd["diversity"]["mean_nn_distance_after"]


def test_kcenter_without_quotas_is_farthest_first():
    """With no strata the selection is plain greedy k-center: each pick maximises min distance."""
    x = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    keep = cz.select(x, [[] for _ in range(60)], 8, "kcenter", [], seed=3)
    # Replay: first pick is the seeded start, then farthest-first.
    start = int(np.random.default_rng(3).permutation(60)[0])
    order = [start]
    d = np.linalg.norm(x - x[start], axis=1)
    for _ in range(7):
        i = int(np.argmax(np.where(np.isin(np.arange(60), order), -1, d)))
        order.append(i)
        d = np.minimum(d, np.linalg.norm(x - x[i], axis=1))
    assert keep == sorted(order)


def test_missing_attribute_is_its_own_group():
    rows = make_rows(50)
    for r in rows[:2]:
        r["groups"].pop("sex")
    kept, report = cz.run(rows, ATTRS, params("kcenter", 0.5))
    assert report["after"]["groups"]["sex"][cz.MISSING] == 2
    assert report["unmet_quotas"] == {}


def test_tiny_and_degenerate_inputs():
    rows = make_rows(3, rare=False)
    kept, report = cz.run(rows, ATTRS, params("kcenter", 0.5))
    assert len(kept) == 2
    same = [dict(r, text="") for r in make_rows(10, rare=False)]
    assert len(cz.run(same, ATTRS, params("kcenter", 0.5))[0]) == 5


def test_ten_thousand_rows_condense_quickly():
    rows = make_rows(10_000, rare=False)
    for method in ("random", "kcenter"):
        t0 = time.perf_counter()
        kept, report = cz.run(rows, ATTRS, params(method, 0.75))
        seconds = time.perf_counter() - t0
        print(f"{method}: 10,000 -> {len(kept)} in {seconds:.1f} s (embedding {report['embedding']['seconds']} s)")
        assert len(kept) == 7500
        assert seconds < 60


def test_main_writes_rows_and_report(tmp_path: Path):
    rows = make_rows(80)
    write_jsonl(tmp_path / "data/healthcare/synthesize/train.jsonl", rows)
    p = Params.model_validate({"domains": {"healthcare": {}}, "condense": {"method": "kcenter", "ratio": 0.5}})
    summary = cz.main("healthcare", p, tmp_path)
    out = read_jsonl(tmp_path / "data/healthcare/condense/train.jsonl")
    report = json.loads((tmp_path / "data/healthcare/condense/report.json").read_text())
    assert summary["n_after"] == len(out) == 40 == report["n_after"]
    assert set(report["before"]["groups"]) == {"sex", "race", "age_band"}
    assert Counter(r["label"] for r in out) == Counter(report["after"]["labels"])
    for key in ("mean_nn_distance_before", "mean_nn_distance_after", "cover_radius"):
        assert key in report["diversity"]
    assert report["seconds"] >= 0
