"""Distill: layer-dropped student init, example building, a short training run on the tiny teacher."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from domains import get_domain
from tasks import distill as ds
from tasks import models
from tasks.distillation.checkpoints import run_key
from tasks.distillation.distributed import Dist
from tasks.distillation.forward import assistant_hidden, output_head, target_logits
from tasks.distillation.objectives import HiddenAlign, head_loss, multitask_loss, task_weights
from tasks.distillation.on_policy import sample_continuations
from tasks.distillation.teacher import TeacherStates, TeacherTargets, topk_targets, with_teacher_topk
from tasks.distillation.trainer import step_loss
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
    assert task_weights(p, True) == {ds.LABEL: 0.7, ds.RATIONALE: 0.3}
    assert task_weights(p, False) == {ds.LABEL: 1.0, ds.RATIONALE: 0.0}
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 11, generator=g), torch.randn(6, 11, generator=g)
    targets, task = torch.randint(0, 11, (6,), generator=g), torch.tensor([0, 0, 0, 1, 1, 1])
    out = multitask_loss(s, t, targets, task, p, task_weights(p, True))
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
    assert metrics["processes"] == 1 and metrics["device"] == models.device_name("cuda" if torch.cuda.is_available() else "cpu")
    assert metrics["n_train_rationale"] == (sum(bool(r["rationale"]) for r in train) if rationale else 0)
    assert metrics["teacher_accuracy"] == pytest.approx(sum(r["correct"] for r in test) / len(test))
    assert summary["student_accuracy"] == metrics["student_accuracy"]

    with open(out / "history.csv") as f:
        history = list(csv.DictReader(f))
    assert [int(h["step"]) for h in history] == list(range(1, 7))
    assert set(ds.HISTORY_FIELDS) == set(history[0])
    for h in history:  # every term unweighted and as it enters the loss
        assert float(h["kd_weighted"]) == pytest.approx(0.5 * float(h["kd"]), rel=1e-4, abs=1e-6)
        assert float(h["loss"]) == pytest.approx(float(h["kd_weighted"]) + float(h["ce_weighted"]), rel=1e-4, abs=1e-5)
    with open(out / "eval.csv") as f:
        evals = list(csv.DictReader(f))
    assert [(int(e["step"]), e["split"]) for e in evals] == [(0, "test"), (6, "test")]
    assert float(evals[-1]["loss"]) == pytest.approx(metrics["student_loss"], rel=1e-6)
    assert not list((out / "checkpoints").glob("*.pt"))
    assert metrics["kd_weighted_final"] == pytest.approx(0.5 * metrics["kd_final"], rel=1e-4)

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


def test_memoised_teacher_states_equal_a_fresh_forward():
    teacher = random_llama(2)
    g = torch.Generator().manual_seed(0)
    pool = [ds.Example(ds.LABEL if i % 2 else ds.RATIONALE, str(i), torch.randint(1, 64, (5 + i,), generator=g).tolist(),
                       torch.randint(1, 64, (1 + i % 3,), generator=g).tolist()) for i in range(6)]
    memo = TeacherStates(teacher, pad_id=0)
    for examples in (pool[:3], pool[1:5], pool[::-1], pool[2:4] + pool[2:4]):
        with torch.no_grad():
            fresh, _, _ = target_logits(teacher, ds.collate(examples, 0, "cpu"))
        got = memo(examples, "cpu")
        n = len(fresh)
        torch.testing.assert_close(got.logits(slice(0, n)), fresh, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(got.logits(slice(2, n - 1)), fresh[2 : n - 1], rtol=1e-3, atol=1e-3)  # across examples
    assert memo.computed == 6  # each example ran through the teacher once
    over = TeacherStates(teacher, 0, budget_mb=0)(pool, "cpu")  # no logits memo: the head runs per chunk
    assert all(cached is None for _, _, cached in over.spans) and over.logits(slice(0, 4)).shape == (4, 64)


# ---- the engine: chunked multi-task loss, top-k, GKD, hidden alignment ------------------------


def _batch_tensors(n=29, h_dim=8, v=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, h_dim, generator=g), torch.randn(v, h_dim, generator=g), torch.randn(n, h_dim, generator=g),
            torch.randn(v, h_dim, generator=g), torch.randint(0, v, (n,), generator=g), (torch.rand(n, generator=g) > 0.4).long())


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tvd"])
@pytest.mark.parametrize("chunk", [0, 5])
def test_chunked_head_loss_equals_the_dense_multitask_loss(divergence, chunk):
    h, w, th, tw, targets, task = _batch_tensors()
    p = Distill(**TINY_PARAMS, divergence=divergence, chunk_size=chunk, rationale_weight=0.3, kd_weight=0.7, ce_weight=0.2)
    weights = task_weights(p, True)
    a, wa = h.clone().requires_grad_(), w.clone().requires_grad_()
    got = head_loss(a, wa, None, targets, task, TeacherTargets(hidden=th, weight=tw), p, weights, divergence)
    got["loss"].backward()
    b, wb = h.clone().requires_grad_(), w.clone().requires_grad_()
    want = multitask_loss(torch.nn.functional.linear(b, wb), torch.nn.functional.linear(th, tw), targets, task, p, weights)
    want["loss"].backward()
    for key in ("loss", "kd", "ce", "label_loss", "rationale_loss"):
        assert got[key].item() == pytest.approx(want[key].item(), rel=1e-5), key
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(wa.grad, wb.grad, rtol=1e-4, atol=1e-6)
    # every term is reported: the loss is the sum of the weighted terms
    assert got["loss"].item() == pytest.approx(p.kd_weight * got["kd"].item() + p.ce_weight * got["ce"].item(), rel=1e-5)


def test_offline_topk_over_the_whole_vocabulary_equals_online_kd():
    """k = V stored log-probs (tail ~0) give the online forward-KL loss at T = 1; fewer positions: CE only there."""
    teacher = random_llama(2)
    student = ds.init_student(teacher, [0])
    with torch.no_grad():
        student.lm_head.weight.mul_(20)  # far from the teacher: a KD term well above the tail floor
    g = torch.Generator().manual_seed(5)
    pool = [ds.Example(ds.LABEL if i % 2 else ds.RATIONALE, str(i), torch.randint(1, 64, (6,), generator=g).tolist(),
                       torch.randint(1, 64, (3,), generator=g).tolist()) for i in range(4)]
    with_topk = with_teacher_topk(teacher, pool, k=64, pad_id=0)
    p_on = Distill(**{**TINY_PARAMS, "temperature": 1.0, "chunk_size": 4})
    p_off = Distill(**{**TINY_PARAMS, "temperature": 1.0, "chunk_size": 4, "teacher_source": "topk"})
    weights = task_weights(p_on, True)
    h, targets, task, _ = assistant_hidden(student, ds.collate(pool, 0, "cpu"))
    w, b = output_head(student)
    online = head_loss(h, w, b, targets, task, TeacherStates(teacher, 0)(pool, "cpu"), p_on, weights, "forward_kl")
    offline = head_loss(h, w, b, targets, task, topk_targets(with_topk, "cpu"), p_off, weights, "forward_kl")
    assert offline["kd"].item() == pytest.approx(online["kd"].item(), rel=1e-3)
    assert offline["ce"].item() == pytest.approx(online["ce"].item(), rel=1e-6)
    # Stored distributions for the first target token only: KD averages over those positions alone.
    partial = [replace(e, teacher_topk=(e.teacher_topk[0][:1], e.teacher_topk[1][:1])) for e in with_topk]
    t = topk_targets(partial, "cpu")
    assert t.has.tolist() == [True, False, False] * 4
    first = head_loss(h, w, b, targets, task, t, p_off, weights, "forward_kl")
    assert 0 < first["kd"].item() != pytest.approx(offline["kd"].item())
    # Training from stored top-k needs no teacher model at all.
    pools = {task: [e for e in with_topk if e.task == task] for task in (ds.LABEL, ds.RATIONALE)}
    history = ds.train(student, None, pools, Distill(**{**TINY_PARAMS, "teacher_source": "topk", "steps": 2}), 0,
                       progress=False)
    assert all(h["kd"] > 0 and h["teacher_examples"] == 0 for h in history)
    with pytest.raises(ValueError, match="need the teacher"):
        ds.train(student, None, pools, Distill(**{**TINY_PARAMS, "steps": 2}), 0, progress=False)


def test_synthesized_topk_rows_align_with_the_targets(tiny_path, tok):
    """Rows as synthesize writes them (models.sample topk) give rationale and answer positions their top-k."""
    teacher = models.load_causal_lm(tiny_path, "float32", "cpu")
    row = make_rows(1, rare=False)[0]
    out = models.sample(teacher, tok, [DOMAIN.teacher_prompt(row)], max_new_tokens=12, topk=4, progress=False)[0]
    sample = out["samples"][0]
    ids = tok(sample["text"], add_special_tokens=False)["input_ids"]
    # the teacher's output is noise: pose its first tokens as the rationale and its tail as the answer
    row.update(teacher_output=sample["text"], teacher_topk=sample["topk"], rationale=tok.decode(ids[:5]).strip())
    rationale, _ = ds.make_example(DOMAIN, tok, row, ds.RATIONALE, 256)
    assert rationale.teacher_topk is not None
    n = len(rationale.teacher_topk[0])
    assert 1 <= n < len(rationale.target_ids) and rationale.target_ids[:n] == ids[:n]
    assert rationale.teacher_topk[0] == sample["topk"]["ids"][:n]
    assert all(t in top for t, top in zip(rationale.target_ids[:n], rationale.teacher_topk[0]))
    label, _ = ds.make_example(DOMAIN, tok, row, ds.LABEL, 256)  # "Answer: <label>" is not the noise's suffix
    assert label.teacher_topk is None
    n_out = len(sample["topk"]["ids"])
    broken = {**row, "teacher_topk": {"ids": [[0]] * n_out, "logprobs": [[0.0]] * n_out}}
    assert ds.make_example(DOMAIN, tok, broken, ds.RATIONALE, 256)[0].teacher_topk is None  # tokens not in their top-k


def test_gkd_steps_train_on_student_samples_scored_by_the_teacher():
    teacher = random_llama(2)
    student = ds.init_student(teacher, [0]).float()
    g = torch.Generator().manual_seed(6)
    pool = [ds.Example(ds.LABEL, str(i), torch.randint(3, 64, (6,), generator=g).tolist(), [7, 8, 2]) for i in range(6)]
    p = Distill(**{**TINY_PARAMS, "gkd_lambda": 1.0, "gkd_max_new_tokens": 5, "steps": 3, "beta": 0.3})
    samples = sample_continuations(student, pool[:4], p, pad_id=0, eos_id=2, seed=11)
    again = sample_continuations(student, pool[:4], p, pad_id=0, eos_id=2, seed=11)
    assert [s.target_ids for s in samples] == [s.target_ids for s in again]  # seeded: a resumed run redraws them
    assert [s.prompt_ids for s in samples] == [e.prompt_ids for e in pool[:4]]
    assert all(1 <= len(s.target_ids) <= 5 and (2 not in s.target_ids[:-1]) for s in samples)
    assert any(s.target_ids != [7, 8, 2] for s in samples)
    # The on-policy loss is kd_weight x JSD(beta) of student vs teacher on those samples, no CE.
    states = TeacherStates(teacher, 0)
    out = step_loss(student, states, None, samples, p, task_weights(p, False), True, 0, "cpu")
    with torch.no_grad():
        s_logits, targets, task = target_logits(student, ds.collate(samples, 0, "cpu"))
        t_logits, _, _ = target_logits(teacher, ds.collate(samples, 0, "cpu"))
    ref = multitask_loss(s_logits, t_logits, targets, task, Distill(**{**TINY_PARAMS, "divergence": "jsd", "beta": 0.3,
                                                                          "ce_weight": 0.0}), task_weights(p, False))
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-3)
    assert out["ce"].item() == 0 and out["kd_weighted"].item() == pytest.approx(out["loss"].item(), rel=1e-6)
    assert not states.cache  # student samples are not memoised
    history = ds.train(student, teacher, {ds.LABEL: pool, ds.RATIONALE: []}, p, 0, progress=False)
    assert [h["on_policy"] for h in history] == [1, 1, 1] and all(h["kd"] > 0 and h["ce"] == 0 for h in history)


def test_hidden_alignment_learns_a_projection_across_widths():
    torch.manual_seed(0)
    teacher = random_llama(2)  # width 32
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    student = LlamaForCausalLM(config)  # width 16, the same vocabulary
    g = torch.Generator().manual_seed(7)
    pool = [ds.Example(ds.LABEL, str(i), torch.randint(3, 64, (6,), generator=g).tolist(),
                       torch.randint(3, 64, (4,), generator=g).tolist()) for i in range(8)]
    p = Distill(**{**TINY_PARAMS, "steps": 25, "lr": 1e-2, "hidden_weight": 1.0, "hidden_layers": [(1, 2), (-1, -1)],
                   "kd_weight": 0.1, "ce_weight": 0.1})
    history = ds.train(student, teacher, {ds.LABEL: pool, ds.RATIONALE: []}, p, 0, progress=False)
    first, last = history[0], history[-1]
    assert first["hidden"] > 0 and last["hidden"] < 0.7 * first["hidden"], (first["hidden"], last["hidden"])
    for h in history:
        assert h["hidden_weighted"] == pytest.approx(h["hidden"], rel=1e-5)
        assert h["loss"] == pytest.approx(h["kd_weighted"] + h["ce_weighted"] + h["hidden_weighted"], rel=1e-4, abs=1e-6)
    align = HiddenAlign([(1, 2)], 16, 32)
    assert isinstance(align.proj[0], torch.nn.Linear) and align.proj[0].weight.shape == (32, 16)
    assert isinstance(HiddenAlign([], 32, 32).proj[0], torch.nn.Identity) and HiddenAlign([], 32, 32).pairs == [(-1, -1)]


def test_early_stopping_stops_after_patience_evaluations_without_improvement():
    teacher = random_llama(2)
    student = ds.init_student(teacher, [0])
    g = torch.Generator().manual_seed(8)
    pool = [ds.Example(ds.LABEL, str(i), torch.randint(3, 64, (5,), generator=g).tolist(), [9, 2]) for i in range(4)]
    pools = {ds.LABEL: pool, ds.RATIONALE: []}
    # lr 1e-30 moves no float32 weight: the validation loss never improves after the first eval
    frozen = Distill(**{**TINY_PARAMS, "steps": 20, "lr": 1e-30, "eval_every": 2, "patience": 2})
    history = ds.train(student, teacher, pools, frozen, 0, eval_pools=pools, progress=False)
    assert [h["step"] for h in history if "heldout_loss" in h] == [2, 4, 6]
    assert len(history) == 6 and history[-1]["best_step"] == 2
    # learning: the validation loss keeps improving, so no stop before the last step
    learning = Distill(**{**TINY_PARAMS, "steps": 8, "lr": 1e-2, "eval_every": 2, "patience": 1})
    history = ds.train(ds.init_student(teacher, [0]), teacher, pools, learning, 0, eval_pools=pools, progress=False)
    evals = [h["heldout_loss"] for h in history if "heldout_loss" in h]
    assert len(history) == 8 and evals == sorted(evals, reverse=True) and history[-1]["best_step"] == 8


def test_split_validation_is_seeded_and_disjoint():
    rows = make_rows(20, rare=False)
    train, val = ds.split_validation(rows, 0.2, seed=0)
    assert len(val) == 4 and len(train) == 16 and not {r["id"] for r in train} & {r["id"] for r in val}
    assert ds.split_validation(rows, 0.2, seed=0) == (train, val)


# ---- checkpoints: a killed run resumes to the same weights --------------------------------------

RESUME_PARAMS = dict(TINY_PARAMS, steps=8, checkpoint_every=2, gkd_lambda=0.5, gkd_max_new_tokens=4, hidden_weight=0.1,
                     lr=3e-3)


def resume_setup():
    """The student, teacher, pools and params of the resume test (also imported by its subprocess)."""
    from conftest import TINY_TEACHER

    path = models.resolve_model(TINY_TEACHER)
    tok = models.load_tokenizer(path)
    pools, _ = ds.build_examples(DOMAIN, tok, make_rows(12, rare=False), max_length=128)
    teacher = models.load_causal_lm(path, "float32", "cpu")
    student = ds.init_student(teacher, [0])
    return student, teacher.to(torch.bfloat16), pools, Distill(**RESUME_PARAMS), tok.pad_token_id


KILL_AFTER_SECOND_CHECKPOINT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_distill import resume_setup
from tasks.distillation import trainer
real, saved = trainer.save_checkpoint, []  # the name train() calls
def save_then_die(path, state):
    real(path, state)
    saved.append(state["step"])
    if len(saved) == 2:  # step 4's checkpoint is on disk: die hard, as a killed job would
        os.kill(os.getpid(), signal.SIGKILL)
trainer.save_checkpoint = save_then_die
student, teacher, pools, params, pad_id = resume_setup()
trainer.train(student, teacher, pools, params, pad_id, checkpoint_dir={ckpt!r}, progress=False)
"""


def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    student, teacher, pools, params, pad_id = resume_setup()
    reference = ds.train(student, teacher, pools, params, pad_id, checkpoint_dir=tmp_path / "uninterrupted", progress=False)
    assert not list((tmp_path / "uninterrupted").glob("*.pt"))  # finished: the checkpoint is gone

    ckpt = tmp_path / "checkpoints"
    script = KILL_AFTER_SECOND_CHECKPOINT.format(tests=str(ROOT / "tests"), ckpt=str(ckpt))
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          # the same thread count as here: bitwise-equal weights need the same reduction order
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT),
                               "OMP_NUM_THREADS": str(torch.get_num_threads())})
    assert done.returncode == -9, done.stderr[-3000:]
    [saved] = list(ckpt.glob("*.pt"))
    assert torch.load(saved, weights_only=False)["step"] == 4

    resumed_student, teacher, pools, params, pad_id = resume_setup()
    resumed = ds.train(resumed_student, teacher, pools, params, pad_id, checkpoint_dir=ckpt, progress=False)
    assert not saved.exists()
    assert [h["step"] for h in resumed] == list(range(1, 9))
    on_policy = [h["on_policy"] for h in resumed]
    assert on_policy == [h["on_policy"] for h in reference] and 0 < sum(on_policy) < 8  # both kinds of step
    for a, b in zip(resumed[4:], reference[4:]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    ref_state = student.state_dict()
    for name, value in resumed_student.state_dict().items():
        assert torch.equal(value, ref_state[name]), name
    # other params: another key, no resume
    other = Distill(**{**RESUME_PARAMS, "lr": 1e-3})
    assert run_key(other, pools, resumed_student) != run_key(params, pools, resumed_student)


def test_multi_gpu_launch_config_and_single_process_default():
    import yaml

    from conftest import ROOT

    config = yaml.safe_load((ROOT / "configs/accelerate_multi_gpu.yaml").read_text())
    assert config["distributed_type"] == "MULTI_GPU" and config["num_processes"] >= 2
    assert Dist.from_env() == Dist(0, 1)  # no WORLD_SIZE: one process, accelerate untouched
    import accelerate  # noqa: F401  (a dependency: the launcher and PartialState)
