"""Student init (tasks/student.py): layer selection, another model as student, LoRA and its merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from domains import get_domain
from tasks import distill as ds
from tasks import models
from tasks import student as st
from tasks.params import Distill
from test_condense import make_rows


@pytest.fixture(scope="module")
def tiny_path() -> str:
    from conftest import TINY_TEACHER

    return models.resolve_model(TINY_TEACHER)


@pytest.fixture(scope="module")
def tiny_teacher_model(tiny_path):
    return models.load_causal_lm(tiny_path, "float32", "cpu")


def random_llama(n_layers: int = 6, vocab: int = 64) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def ids(n: int = 2, length: int = 10, vocab: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(seed))


# ---- layer selection ------------------------------------------------------------------------


def test_layer_selections():
    assert st.kept_layers(30, 8, 8) == list(range(8)) + list(range(22, 30))
    assert st.kept_layers(4, 3, 3) == [0, 1, 2, 3]
    assert st.every_k_layers(30, 2) == list(range(0, 30, 2)) + [29]  # the last block always stays
    assert st.every_k_layers(30, 3) == list(range(0, 30, 3)) + [29]
    assert st.every_k_layers(7, 3) == [0, 3, 6]
    assert st.every_k_layers(5, 1) == [0, 1, 2, 3, 4]
    assert st.select_layers(30, Distill()) == st.kept_layers(30, 8, 8)  # the default is today's
    assert st.select_layers(30, Distill(keep_first=2, keep_last=3)) == [0, 1, 27, 28, 29]
    assert st.select_layers(30, Distill(student={"layers": "every_k", "every": 4})) == [0, 4, 8, 12, 16, 20, 24, 28, 29]
    assert st.select_layers(30, Distill(student={"layers": "list", "indices": [29, 0, 7]})) == [0, 7, 29]
    assert st.select_layers(30, Distill(student={"model": "some/model"})) is None
    with pytest.raises(ValueError, match="out of range"):
        st.select_layers(6, Distill(student={"layers": "list", "indices": [0, 6]}))


def test_student_spec_is_validated():
    with pytest.raises(ValidationError, match="needs distill.student.indices"):
        Distill(student={"layers": "list"})
    with pytest.raises(ValidationError, match="distinct"):
        Distill(student={"layers": "list", "indices": [1, 1]})
    with pytest.raises(ValidationError, match="with layers=list"):
        Distill(student={"layers": "every_k", "indices": [1]})
    with pytest.raises(ValidationError):
        Distill(student={"lora_rank": -1})
    with pytest.raises(ValidationError):
        Distill(student={"layer": "list"})  # typo: unknown keys are errors


def test_distill_module_still_exposes_the_shared_api():
    """distill.py's kept_layers / init_student (until it imports ours) behave like tasks.student's."""
    teacher = random_llama(6)
    assert ds.kept_layers(30, 8, 8) == st.kept_layers(30, 8, 8)
    a, b = ds.init_student(teacher, [0, 5]), st.init_student(teacher, [0, 5])
    with torch.no_grad():
        torch.testing.assert_close(a(ids()).logits, b(ids()).logits, rtol=0, atol=0)


@pytest.mark.parametrize("spec,keep", [
    ({"layers": "every_k", "every": 2}, [0, 2, 4, 5]),
    ({"layers": "list", "indices": [1, 3]}, [1, 3]),
    ({}, [0, 1, 4, 5]),  # keep_first=2, keep_last=2
])
def test_init_student_copies_exactly_the_selected_blocks(spec, keep):
    teacher = random_llama(6)
    student = st.init_student(teacher, Distill(keep_first=2, keep_last=2, student=spec))
    assert len(teacher.model.layers) == 6  # teacher untouched
    assert student.config.num_hidden_layers == len(keep) == len(student.model.layers)
    for new, old in enumerate(keep):
        assert student.model.layers[new].self_attn.layer_idx == new
        for (name, a), (_, b) in zip(student.model.layers[new].named_parameters(),
                                     teacher.model.layers[old].named_parameters()):
            assert torch.equal(a, b) and a.data_ptr() != b.data_ptr(), name
    with torch.no_grad():  # cached decoding indexes the renumbered blocks
        kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
        assert torch.equal(student.generate(ids(1, 4), use_cache=True, **kw),
                           student.generate(ids(1, 4), use_cache=False, **kw))


def test_perplexity_selection_drops_the_blocks_that_cost_least():
    """A block that wrecks the residual stream goes first; each later drop is the block whose
    removal costs least (checked against every alternative); the teacher is left as it was."""
    teacher = random_llama(6)
    with torch.no_grad():
        for linear in (teacher.model.layers[2].self_attn.o_proj, teacher.model.layers[2].mlp.down_proj):
            linear.weight.mul_(300.0)
    batch = {"input_ids": ids(4, 12), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
    with torch.no_grad():
        before = teacher(**batch).logits

    def loss(keep):
        with torch.no_grad():
            return st.init_student(teacher, keep)(**batch, labels=batch["input_ids"]).loss.item()
    first = st.perplexity_layers(teacher, batch, 5, progress=False)
    assert first == [0, 1, 3, 4, 5]
    assert loss(first) < min(loss([k for k in range(6) if k != i]) for i in range(6) if i != 2)
    second = min(first, key=lambda i: loss([k for k in first if k != i]))
    assert st.perplexity_layers(teacher, batch, 4, progress=False) == [k for k in first if k != second]
    assert teacher.config.num_hidden_layers == len(teacher.model.layers) == 6
    with torch.no_grad():
        torch.testing.assert_close(teacher(**batch).logits, before, rtol=0, atol=0)
    with pytest.raises(ValueError, match="calibration"):
        st.select_layers(6, Distill(student={"layers": "perplexity"}))


def test_stage_prunes_by_perplexity(tmp_path: Path, tiny_teacher: str, capfd):
    """distill with student.layers=perplexity prunes on its training rows down to keep_first + keep_last blocks."""
    from test_distill import TINY_PARAMS, _stage_inputs

    _stage_inputs(tmp_path, rationale=False)
    from tasks.params import Params

    params = Params.model_validate({"domains": {"healthcare": {}}, "synthesize": {"teacher": tiny_teacher},
                                    "distill": {**TINY_PARAMS, "keep_first": 1, "keep_last": 0,
                                                "student": {"layers": "perplexity", "calibration_examples": 4}}})
    ds.main("healthcare", params, tmp_path)
    meta = json.loads((tmp_path / "data/healthcare/distill/student/stillhouse.json").read_text())
    assert len(meta["kept_layers"]) == 1 and meta["kept_layers"][0] in (0, 1)
    assert "student: pruning blocks" in capfd.readouterr().err  # the pruning ran (first_last would keep [0] silently)


def test_tiny_teacher_every_k_keeps_both_blocks(tiny_teacher_model):
    student = st.init_student(tiny_teacher_model, Distill(student={"layers": "every_k", "every": 5}))
    assert student.config.num_hidden_layers == 2  # block 0 and the last of 2
    x = ids(2, 8, vocab=tiny_teacher_model.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(student(x).logits, tiny_teacher_model(x).logits, rtol=0, atol=0)


# ---- any model as student -------------------------------------------------------------------


def test_another_model_as_student(tiny_teacher_model, tiny_path, tmp_path: Path):
    from conftest import TINY_TEACHER

    student = st.init_student(tiny_teacher_model, Distill(student={"model": TINY_TEACHER}))
    assert student is not tiny_teacher_model and student.dtype == torch.float32
    assert st.select_layers(2, Distill(student={"model": TINY_TEACHER})) is None
    x = ids(1, 6, vocab=tiny_teacher_model.config.vocab_size)
    with torch.no_grad():  # loaded from its own weights (here the same file)
        torch.testing.assert_close(student(x).logits, tiny_teacher_model(x).logits)
    # A model with another vocabulary cannot be distilled token by token: a clear error.
    other = random_llama(2, vocab=128)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="tokenizer"):
        st.init_student(tiny_teacher_model, Distill(student={"model": str(tmp_path / "other")}))


# ---- LoRA -----------------------------------------------------------------------------------


def test_lora_trains_only_adapters_and_merges_into_plain_weights(tmp_path: Path):
    teacher = random_llama(4)
    params = Distill(keep_first=1, keep_last=1, student={"lora_rank": 4, "lora_targets": ["q_proj", "v_proj"]})
    student = st.init_student(teacher, params)
    assert type(student) is LlamaForCausalLM and st.has_lora(student)  # no PeftModel wrapper
    trainable = [n for n, p in student.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "v_proj"}
    plain = st.init_student(teacher, Distill(keep_first=1, keep_last=1))
    x = ids()
    with torch.no_grad():  # LoRA's B starts at zero: the student starts as the plain selection
        torch.testing.assert_close(student(x).logits, plain(x).logits)
    frozen = {n: p.detach().clone() for n, p in student.named_parameters() if not p.requires_grad}

    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(student(x).logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in student.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    with torch.no_grad():
        trained = student(x).logits
    assert not torch.allclose(trained, plain(x).logits, atol=1e-4)  # the adapters learned something

    merged = st.finalize_student(student)
    assert not st.has_lora(merged)
    assert not any("lora_" in n for n in merged.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(merged(x).logits, trained, atol=1e-5, rtol=1e-5)
    merged.save_pretrained(tmp_path / "s")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "s").eval()  # plain transformers loads it
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, trained, atol=1e-5, rtol=1e-5)
    assert st.finalize_student(plain) is plain  # no adapters: unchanged


def test_lora_rejects_unknown_targets():
    with pytest.raises(ValueError, match="not linear modules"):
        st.init_student(random_llama(2), Distill(keep_first=1, keep_last=1,
                                                 student={"lora_rank": 2, "lora_targets": ["qkv"]}))


def test_lora_student_through_the_training_loop(tiny_path, tiny_teacher_model):
    """The shared train() runs a LoRA student: loss moves, only adapters change, the merge saves plain."""
    dom = get_domain("healthcare")
    tok = models.load_tokenizer(tiny_path)
    rows = make_rows(12)
    for r in rows:
        r["rationale"] = "Because the note says so."
    pools, _ = ds.build_examples(dom, tok, rows, 96)
    params = Distill(keep_first=1, keep_last=1, steps=4, batch_size=4, max_length=96, lr=5e-3,
                     student={"lora_rank": 4})
    student = st.init_student(tiny_teacher_model, params)
    base = {n: p.detach().clone() for n, p in student.named_parameters() if not p.requires_grad}
    lora_before = {n: p.detach().clone() for n, p in student.named_parameters() if p.requires_grad}
    history = ds.train(student, tiny_teacher_model, pools, params, tok.pad_token_id)
    assert len(history) == 4 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    params_after = dict(student.named_parameters())
    assert all(torch.equal(params_after[n], p) for n, p in base.items())
    assert any(not torch.equal(params_after[n], p) for n, p in lora_before.items())
    merged = st.finalize_student(student)
    assert ds.heldout_loss(merged, pools, tok.pad_token_id)["loss"] > 0


# ---- compute dtype --------------------------------------------------------------------------


def test_auto_dtype_follows_native_bf16(tiny_path, monkeypatch):
    """"auto" is bf16 only where the hardware has it natively (emulated bf16 on an AVX2 CPU
    measured ~50x slower than float32); autocast is a no-op there."""
    from tasks.distillation.forward import autocast

    for native in (False, True):
        monkeypatch.setattr(models, "native_bf16", lambda device, native=native: native)
        want = torch.bfloat16 if native else torch.float32
        assert models.resolve_dtype("auto", "cpu") == str(want).removeprefix("torch.")
        assert next(models.load_causal_lm(tiny_path, "auto", "cpu").parameters()).dtype == want
        with autocast("cpu"):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == want
    assert models.resolve_dtype("float32", "cpu") == "float32"
    with pytest.raises(ValueError, match="dtype"):
        models.resolve_dtype("fp8", "cpu")


def test_concurrent_gguf_conversions_all_get_a_complete_folder(tmp_path):
    """Two processes converting the same GGUF at once (two warm shards, two flow workers) both
    load the result: the loser of the race keeps the winner's folder instead of deleting it."""
    import subprocess
    import sys

    from conftest import ROOT, TINY_TEACHER

    code = ("import sys; from tasks import models; p = models.resolve_model(sys.argv[1]); "
            "models.load_causal_lm(p, 'float32', 'cpu'); print(p)")
    env = {**__import__("os").environ, "STILLHOUSE_CACHE": str(tmp_path), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, TINY_TEACHER], env=env, cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    paths = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(paths) == 1 and (Path(paths.pop()) / "config.json").is_file()
    assert not list((tmp_path / "models").glob("*.tmp*"))  # no orphaned partial conversions
