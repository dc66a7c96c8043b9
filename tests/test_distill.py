"""Distill: layer-dropped student init, example building, a short training run on the tiny teacher."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from domains import get_domain
from tasks import distill as ds
from tasks import models
from tasks.params import Distill, Params
from tasks.records import read_jsonl, write_jsonl
from test_condense import make_rows

DOMAIN = get_domain("healthcare")
TINY_PARAMS = dict(keep_first=1, keep_last=1, steps=6, batch_size=4, max_length=128, lr=1e-3,
                   eval_max_new_tokens=4, seed=0)


@pytest.fixture(scope="module")
def tiny_path() -> str:
    from conftest import TINY_TEACHER

    return models.resolve_model(TINY_TEACHER)


@pytest.fixture(scope="module")
def tok(tiny_path):
    return models.load_tokenizer(tiny_path)


def random_llama(n_layers: int = 6) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


# ---- student init ---------------------------------------------------------------------------


def test_kept_layers_first_and_last():
    assert ds.kept_layers(30, 8, 8) == list(range(8)) + list(range(22, 30))
    assert ds.kept_layers(2, 1, 1) == [0, 1]
    assert ds.kept_layers(6, 2, 0) == [0, 1]
    assert ds.kept_layers(6, 0, 1) == [5]
    assert ds.kept_layers(4, 3, 3) == [0, 1, 2, 3]  # overlapping: the whole teacher


def test_student_keeps_exactly_the_chosen_blocks():
    teacher = random_llama(6)
    keep = ds.kept_layers(6, 2, 2)
    student = ds.init_student(teacher, keep)
    assert len(teacher.model.layers) == 6 and teacher.config.num_hidden_layers == 6  # teacher untouched
    assert len(student.model.layers) == 4 and student.config.num_hidden_layers == 4
    for new, old in enumerate(keep):
        s_block, t_block = student.model.layers[new], teacher.model.layers[old]
        assert s_block is not t_block
        assert s_block.self_attn.layer_idx == new
        for (name, a), (_, b) in zip(s_block.named_parameters(), t_block.named_parameters()):
            assert torch.equal(a, b), name
    # Independent copies: training the student leaves the teacher alone.
    with torch.no_grad():
        student.model.layers[0].mlp.up_proj.weight.add_(1.0)
    assert not torch.equal(student.model.layers[0].mlp.up_proj.weight, teacher.model.layers[0].mlp.up_proj.weight)


def test_student_with_all_layers_equals_teacher():
    teacher = random_llama(4)
    student = ds.init_student(teacher, [0, 1, 2, 3])
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(student(ids).logits, teacher(ids).logits, rtol=0, atol=0)


def test_dropped_student_caches_correctly_and_round_trips(tmp_path: Path):
    """Re-indexed blocks: cached greedy decoding equals uncached, and save/load keeps the model."""
    student = ds.init_student(random_llama(6), [0, 4, 5])
    ids = torch.randint(0, 64, (1, 5), generator=torch.Generator().manual_seed(1))
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = student.generate(ids, use_cache=True, **kwargs)
        uncached = student.generate(ids, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
    student.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.num_hidden_layers == 3
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, student(ids).logits)


# ---- examples -------------------------------------------------------------------------------


def test_examples_and_collate_mark_only_assistant_tokens(tok):
    rows = make_rows(6, rare=False)
    rows[0]["rationale"] = None
    pools, _ = ds.build_examples(DOMAIN, tok, rows, max_length=512)
    assert len(pools[ds.LABEL]) == 6
    assert len(pools[ds.RATIONALE]) == sum(bool(r["rationale"]) for r in rows)
    label = pools[ds.LABEL][1]
    assert tok.decode(label.target_ids, skip_special_tokens=True).strip() == f"Answer: {rows[1]['label']}"
    assert label.target_ids[-1] == tok.eos_token_id
    assert "[label] " in tok.decode(label.prompt_ids)
    batch = ds.collate(pools[ds.LABEL][:3] + pools[ds.RATIONALE][:1], tok.pad_token_id, "cpu")
    for b, e in enumerate(pools[ds.LABEL][:3] + pools[ds.RATIONALE][:1]):
        marked = batch["input_ids"][b][batch["target_mask"][b].bool()].tolist()
        assert marked == e.target_ids
        assert int(batch["attention_mask"][b].sum()) == e.length
    assert batch["task"].tolist() == [0, 0, 0, 1]


def test_long_prompts_are_cut_to_max_length(tok):
    row = make_rows(1, rare=False)[0]
    row["text"] = " ".join(["tachycardia"] * 400)
    example, cut = ds.make_example(DOMAIN, tok, row, ds.LABEL, max_length=64)
    assert cut and example.length == 64
    full = tok(ds.task_prompt(DOMAIN, tok, row), add_special_tokens=False)["input_ids"]
    assert example.prompt_ids[-10:] == full[-10:]  # the question and assistant header survive


def test_multitask_weights():
    p = Distill(**TINY_PARAMS, rationale_weight=0.3)
    assert ds.task_weights(p, True) == {ds.LABEL: 0.7, ds.RATIONALE: 0.3}
    assert ds.task_weights(p, False) == {ds.LABEL: 1.0, ds.RATIONALE: 0.0}
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 11, generator=g), torch.randn(6, 11, generator=g)
    targets, task = torch.randint(0, 11, (6,), generator=g), torch.tensor([0, 0, 0, 1, 1, 1])
    out = ds.multitask_loss(s, t, targets, task, p, ds.task_weights(p, True))
    assert out["loss"].item() == pytest.approx(0.7 * out["label_loss"].item() + 0.3 * out["rationale_loss"].item())
    assert out["loss"].item() == pytest.approx(p.kd_weight * out["kd"].item() + p.ce_weight * out["ce"].item())


# ---- training and the stage on the tiny teacher ---------------------------------------------


def test_training_reduces_training_loss(tiny_path, tok):
    rows = make_rows(16, rare=False)
    pools, _ = ds.build_examples(DOMAIN, tok, rows, max_length=128)
    teacher = models.load_causal_lm(tiny_path, "float32", "cpu")
    student = ds.init_student(teacher, [0])
    teacher = teacher.to(torch.bfloat16)
    params = Distill(**{**TINY_PARAMS, "steps": 12, "lr": 5e-3})
    before = ds.heldout_loss(student, pools, tok.pad_token_id)["loss"]
    history = ds.train(student, teacher, pools, params, tok.pad_token_id)
    after = ds.heldout_loss(student, pools, tok.pad_token_id)["loss"]
    assert len(history) == 12 and {"loss", "kd", "ce", "lr", "seconds"} <= set(history[0])
    assert after < before, (before, after)
    lrs = [h["lr"] for h in history]  # warmup over round(0.1 * 12) = 1 step, then linear decay
    assert lrs[0] == pytest.approx(5e-3) and all(a >= b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 1e-3


def _stage_inputs(root: Path, rationale: bool) -> tuple[list[dict], list[dict]]:
    train, test = make_rows(20, seed=1, rare=False), make_rows(8, seed=2, rare=False)
    if not rationale:
        for r in train + test:
            r.update(rationale=None, kept=False)
    write_jsonl(root / "data/healthcare/condense/train.jsonl", train)
    write_jsonl(root / "data/healthcare/synthesize/test.jsonl", test)
    return train, test


@pytest.mark.parametrize("rationale", [True, False])
def test_stage_writes_every_output(tmp_path: Path, tiny_teacher: str, rationale: bool):
    train, test = _stage_inputs(tmp_path, rationale)
    params = Params.model_validate({"domains": {"healthcare": {}}, "synthesize": {"teacher": tiny_teacher},
                                    "distill": TINY_PARAMS})
    summary = ds.main("healthcare", params, tmp_path)
    out = tmp_path / "data/healthcare/distill"

    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("teacher_loss", "teacher_ppl", "student_before_loss", "student_before_ppl", "student_loss",
                "student_ppl", "teacher_accuracy", "student_before_accuracy", "student_accuracy", "train_seconds",
                "tokens_per_second", "steps", "n_train_label", "n_train_rationale", "kd_final", "ce_final"):
        assert isinstance(metrics[key], (int, float)), key
    assert metrics["steps"] == 6 and metrics["n_train_label"] == 20
    assert metrics["n_train_rationale"] == (sum(bool(r["rationale"]) for r in train) if rationale else 0)
    assert metrics["teacher_accuracy"] == pytest.approx(sum(r["correct"] for r in test) / len(test))
    assert summary["student_accuracy"] == metrics["student_accuracy"]

    with open(out / "history.csv") as f:
        history = list(csv.DictReader(f))
    assert [int(h["step"]) for h in history] == list(range(1, 7))
    assert {"step", "loss", "kd", "ce", "lr", "seconds"} <= set(history[0])

    predictions = read_jsonl(out / "predictions.jsonl")
    assert [p["id"] for p in predictions] == [r["id"] for r in test]
    for p, r in zip(predictions, test):
        assert p["groups"] == r["groups"] and p["label"] == r["label"]
        assert p["teacher_correct"] == r["correct"] and isinstance(p["student_correct"], bool)
        assert {"student_answer", "teacher_answer"} <= set(p)

    meta = json.loads((out / "student/stillhouse.json").read_text())
    assert meta == {"prompt_format": "[label] <question>", "answer_prefix": "Answer:", "teacher": tiny_teacher,
                    "kept_layers": [0, 1], "domain": "healthcare"}
    student = models.load_causal_lm(str(out / "student"), "bfloat16", "cpu")
    tok = models.load_tokenizer(str(out / "student"))
    assert student.config.num_hidden_layers == 2
    text = models.generate(student, tok, [ds.task_prompt(DOMAIN, tok, test[0])], max_new_tokens=3)[0]["text"]
    assert isinstance(text, str)


def test_memoised_teacher_logits_equal_a_fresh_forward():
    teacher = random_llama(2)
    g = torch.Generator().manual_seed(0)
    pool = [ds.Example(ds.LABEL if i % 2 else ds.RATIONALE, str(i), torch.randint(1, 64, (5 + i,), generator=g).tolist(),
                       torch.randint(1, 64, (1 + i % 3,), generator=g).tolist()) for i in range(6)]
    memo = ds.TeacherLogits(teacher, pad_id=0)
    for examples in (pool[:3], pool[1:5], pool[::-1], pool[2:4] + pool[2:4]):
        with torch.no_grad():
            fresh, _, _ = ds.target_logits(teacher, ds.collate(examples, 0, "cpu"))
        torch.testing.assert_close(memo(examples, "cpu"), fresh, rtol=1e-3, atol=1e-3)
    assert memo.computed == 6  # each example ran through the teacher once
    assert ds.TeacherLogits(teacher, 0, budget_mb=0)(pool, "cpu").shape[0] == sum(len(e.target_ids) for e in pool)
