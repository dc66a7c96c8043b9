"""bench/cqa.py: the packed cloze scorer equals scoring each choice alone, the cached student equals
the full model, training through tasks.distill.train moves only the trained blocks. Tiny teacher,
fp32 (bf16 rounding would blur the equalities); skips without ../shared/data. Also
bench/condense.py's table and --reuse (no model, no data)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import cqa  # noqa: E402
from tasks import distill as ds  # noqa: E402


@pytest.fixture
def kit(shared_data, tiny_teacher, monkeypatch, tmp_path):
    if not (shared_data / "distill_step_by_step" / "cqa").is_dir():
        pytest.skip("no distill_step_by_step/cqa in ../shared/data")
    fp32 = lambda *a, **k: contextlib.nullcontext()  # noqa: E731
    monkeypatch.setattr(cqa, "autocast", fp32)
    monkeypatch.setattr("tasks.distillation.forward.autocast", fp32)
    return cqa.Kit(cache_at=1, train_top=1, cache_file=tmp_path / "cache.pt", model=tiny_teacher, batch_size=3)


def test_cached_student_and_packed_scorer_match_the_full_model(kit):
    rows = cqa.load_rows("test", 5)
    check = cqa.check_cache(kit, rows)
    assert check["hidden_max_abs"] < 1e-4 * max(1.0, check["hidden_scale"])
    assert check["score_max_abs"] < 1e-3
    assert check["same_argmax"]
    out = kit.score(kit.student(), rows)
    assert out["choice_logprob"].shape == (5, 5) and np.isfinite(out["choice_logprob"]).all()
    gold = np.array([r["gold"] for r in rows])
    assert (out["correct"] == (out["choice_logprob"].argmax(1) == gold)).all()
    kit.save_cache()  # the cache survives a restart: a new kit scores from it without encoding
    again = cqa.Kit(cache_at=1, train_top=1, cache_file=kit.cache_file, model=kit.path)
    assert again.loaded == len(kit.cache)
    np.testing.assert_allclose(again.score(again.student(), rows)["choice_logprob"], out["choice_logprob"], atol=1e-4)
    assert again.encoded_tokens == 0


def test_uncached_whole_student_scores_as_the_cached_one_and_trains_everything(kit):
    """cache_at 0 (the GPU mode of distill_sbs.py): plain students, the same scorer's numbers."""
    rows = cqa.load_rows("test", 5)
    whole = cqa.Kit(cache_at=0, train_top=kit.n_layers, model=kit.path)
    assert whole.cache_file is None and "no cache" in whole.describe()
    np.testing.assert_allclose(whole.score(whole.student(), rows)["choice_logprob"],
                               kit.score(kit.student(), rows)["choice_logprob"], atol=1e-3)
    student = whole.student()
    assert all(p.requires_grad for p in student.parameters())  # embedding (tied head) included
    with pytest.raises(ValueError, match="cache_at 0"):
        cqa.Kit(cache_at=1, train_top=1, model=kit.path, device="meta")


def test_training_moves_only_the_top_blocks(kit):
    rows = cqa.load_rows("train", 12)
    student = kit.student()
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    history = ds.train(student, None, cqa.examples(kit.tok, rows, 16), cqa.distill_params(3, 4, 1e-2, 0.5, 0),
                       kit.tok.pad_token_id, progress=False)
    assert len(history) == 3 and all(np.isfinite(h["loss"]) for h in history)
    top = f"model.top.layers.{kit.n_layers - kit.cache_at - 1}."
    for n, p in student.named_parameters():  # frozen: embeddings/head and every block below the top one
        if not (n.startswith(top) or n == "model.top.norm.weight"):
            assert torch.equal(before[n], p.detach()), n
    assert any(not torch.equal(before[n], p.detach()) for n, p in student.named_parameters() if n.startswith(top))


def test_paired_bootstrap():
    a = np.zeros(50, dtype=np.int8)
    assert cqa.paired_bootstrap(a, a) == (0.0, 0.0)
    assert cqa.paired_bootstrap(a, np.ones(50, dtype=np.int8)) == (1.0, 1.0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 2, (2, 400)), rng.integers(0, 2, (2, 400))
    lo, hi = cqa.paired_bootstrap(x, y)
    assert lo < y.mean() - x.mean() < hi and hi - lo < 0.2


@pytest.mark.parametrize("rationale", [True, False])
def test_drawn_sequences_are_exactly_what_training_encodes(kit, rationale):
    """`drawn` (what bench/cqa.py warm puts into the cache) predicts the stage's draws: after
    warming with it, training encodes nothing new. With rationales a step holds `inputs` label
    AND `inputs` rationale examples (the paper's multi-task step)."""
    pools = cqa.examples(kit.tok, cqa.load_rows("train", 20), 16)
    if not rationale:
        pools[ds.RATIONALE] = []
    params = cqa.distill_params(5, 3, 1e-3, 0.5, 7, rationale)
    assert params.batch_size == (6 if rationale else 3)
    seqs = cqa.drawn(pools, params)
    assert len(seqs) == 5 * params.batch_size
    kit.bottom_states(seqs)
    encoded = kit.encoded_tokens
    ds.train(kit.student(), None, pools, params, kit.tok.pad_token_id, progress=False)
    assert kit.encoded_tokens == encoded
    wrong = cqa.drawn(pools, cqa.distill_params(5, 3, 1e-3, 0.5, 8, rationale))  # another seed draws others
    assert {tuple(s) for s in wrong} != {tuple(s) for s in seqs}


def test_condense_bench_table_reuses_arms_exactly(tmp_path):
    """bench/condense.py: a table rebuilt from a run's JSON (--reuse) gives the same verdicts,
    the mean-of-draws comparison is the mean of the per-draw differences, and another training
    setup gives only its untrained arm (another cache or test set: refused). No model: arms are
    per-question results."""
    import argparse
    import json

    from bench import condense as cb
    rng = np.random.default_rng(0)
    setup = dict(steps=400, batch=8, lr=3e-4, rationale_weight=0.5, rationale_tokens=64, cache_at=24, train_top=6,
                 n_test=0, seed=0, boot=300, ratios="0.1", random_seeds="0,1,2", versus="")
    arms = {}
    for name, p in [("untrained", 0.2), ("full", 0.3), ("ifd 10%", 0.27), ("random+first 10%", 0.29), ("random 10% s0", 0.3),
                    ("random 10% s1", 0.28), ("random 10% s2", 0.29)]:
        c = rng.random(600) < p
        arms[name] = dict(name=name, n=1, correct=c, accuracy=float(c.mean()), gold_logprob=-1.0, student="s")
    first = argparse.Namespace(method="ifd", out=str(tmp_path / "a.json"), reuse="", **setup)
    cb.table(first, arms, 0.0)
    written = json.loads((tmp_path / "a.json").read_text())
    v = written["versus_random"]
    assert v["ifd 10% mean"]["minus_random"] == pytest.approx(np.mean([v[f"ifd 10% s{i}"]["minus_random"] for i in range(3)]))
    assert "random+first 10% mean" in v  # a random variant is a method, not a draw
    assert written["arms"]["full"]["correct_bits"] == "".join("1" if c else "0" for c in arms["full"]["correct"])

    again = argparse.Namespace(method="ccs", out=str(tmp_path / "b.json"), reuse=str(tmp_path / "a.json"), **setup)
    reused = cb.load_reused(again)
    assert list(reused) == list(arms) and all((reused[n]["correct"] == arms[n]["correct"]).all() for n in arms)
    cb.table(again, reused, 0.0)
    rebuilt = json.loads((tmp_path / "b.json").read_text())
    assert rebuilt["versus_random"] == v and "(reused)" in rebuilt["table"][3]
    # another budget: only the untrained arm (which trains nothing) carries over; another cache is refused
    assert list(cb.load_reused(argparse.Namespace(**{**vars(again), "steps": 100}))) == ["untrained"]
    with pytest.raises(SystemExit, match="another training setup"):
        cb.load_reused(argparse.Namespace(**{**vars(again), "cache_at": 28}))


def test_condense_bench_reuses_an_arm_only_for_the_same_rows():
    """A reused arm stands in only for the rows it was trained on; arms saved before digests count
    only when their row count settles it (untrained, full)."""
    from bench import condense as cb
    rows = [{"id": f"q{i}"} for i in range(10)]
    arm = {"name": "random 10% s0", "n": 3, "rows_digest": cb.rows_digest(rows[:3])}
    assert cb.same_rows(arm, list(reversed(rows[:3])))  # order-free
    assert not cb.same_rows(arm, rows[1:4]) and not cb.same_rows(None, rows)
    assert not cb.same_rows({"name": "random 10% s0", "n": 3}, rows[:3])  # no digest: cannot tell
    assert cb.same_rows({"name": "full", "n": 10}, rows) and cb.same_rows({"name": "untrained", "n": 0}, [])
    assert not cb.same_rows({"name": "full", "n": 9}, rows)


def test_condense_bench_arms_per_ratio():
    from bench import condense as cb
    assert cb.draws("0,1", 0.05) == [0, 1] and cb.draws("", 0.1) == []
    assert cb.draws("0,1;0.1=0,1,2,3", 0.1) == [0, 1, 2, 3] and cb.draws("0,1;0.1=0,1,2,3", 0.2) == [0, 1]
    assert cb.draws("0.05=3", 0.05) == [3] and cb.draws("0.05=3", 0.1) == []
    methods = "kcenter+first,random+first;0.1=kcenter+first,kcenter+first/s1,random+first/t1"  # --method per ratio
    assert cb.at_ratio(methods, 0.2) == ["kcenter+first", "random+first"]
    assert cb.at_ratio(methods, 0.1) == ["kcenter+first", "kcenter+first/s1", "random+first/t1"]


def test_condense_bench_reads_a_method_over_its_selection_seeds(tmp_path):
    """Seeds of one method ("m", "m/s1", "m/s2") are also read together: their mean accuracy against
    the mean random draw, and the 10% target on that mean (one lucky seed does not meet it)."""
    import argparse
    import json

    from bench import condense as cb
    rng = np.random.default_rng(1)
    n = 1000
    arms = {}
    for name, p in [("untrained", 0.2), ("full", 0.3), ("m 10%", 0.31), ("m/s1 10%", 0.22), ("m/s2 10%", 0.25),
                    ("r 10%", 0.24), ("r/s1 10%", 0.26), ("random 10% s0", 0.26), ("random 10% s1", 0.27)]:
        c = rng.random(n) < p
        arms[name] = dict(name=name, n=1, correct=c, accuracy=float(c.mean()), gold_logprob=-1.0, student="s")
    args = argparse.Namespace(method="m,m/s1,m/s2", out=str(tmp_path / "t.json"), reuse="", steps=400, batch=8, lr=3e-4,
                              rationale_weight=0.5, rationale_tokens=64, cache_at=24, train_top=6, n_test=0, seed=0,
                              boot=300, ratios="0.1", random_seeds="0,1", versus="r")
    cb.table(args, arms, 0.0)
    written = json.loads((tmp_path / "t.json").read_text())
    over = written["versus_random"]["m 10% over 3 seeds"]
    versus = written["versus_random"]["m 10% over seeds minus r"]  # --versus: method against method, seeds averaged
    r_mean = np.mean([arms[k]["accuracy"] for k in ("r 10%", "r/s1 10%")])
    assert versus["minus"] == pytest.approx(np.mean([arms[k]["accuracy"] for k in ("m 10%", "m/s1 10%", "m/s2 10%")]) - r_mean)
    assert versus["ci95"][0] < versus["minus"] < versus["ci95"][1] and versus["seeds"] == [3, 2]
    assert "r 10% over seeds minus r" not in written["versus_random"]
    seeds_mean = np.mean([arms[k]["accuracy"] for k in ("m 10%", "m/s1 10%", "m/s2 10%")])
    gain = arms["full"]["accuracy"] - arms["untrained"]["accuracy"]
    assert over["accuracy"] == pytest.approx(seeds_mean)
    assert over["retained"] == pytest.approx((seeds_mean - arms["untrained"]["accuracy"]) / gain)
    assert over["minus_random"] == pytest.approx(seeds_mean - np.mean([arms[f"random 10% s{i}"]["accuracy"] for i in (0, 1)]))
    assert over["ci95"][0] < over["minus_random"] < over["ci95"][1]
    assert written["target"]["m"]["met"]  # seed 0 alone: lucky
    assert not written["target"]["m over seeds"]["met"] and written["target"]["m over seeds"]["seeds"] == 3
    assert "m/s1 over seeds" not in written["target"]


def test_condense_bench_reads_full_over_training_seeds(tmp_path):
    """With --full-seeds the full-data gain is the mean over the full arms (every retained share
    divides by it), and one subset trained with other seeds ("m/t1") gives the training-order
    spread without joining the selection-seed mean of "m"."""
    import argparse
    import json

    from bench import condense as cb
    rng = np.random.default_rng(2)
    n = 1000
    arms = {}
    for name, p in [("untrained", 0.2), ("full", 0.34), ("full t1", 0.3), ("full t2", 0.29), ("m 10%", 0.3),
                    ("m/s1 10%", 0.27), ("m/t1 10%", 0.25), ("random 10% s0", 0.26), ("random 10% s1", 0.27)]:
        c = rng.random(n) < p
        arms[name] = dict(name=name, n=1, correct=c, accuracy=float(c.mean()), gold_logprob=-1.0, student="s")
    args = argparse.Namespace(method="m,m/s1,m/t1", out=str(tmp_path / "t.json"), reuse="", steps=400, batch=8, lr=3e-4,
                              rationale_weight=0.5, rationale_tokens=64, cache_at=24, train_top=6, n_test=0, seed=0,
                              boot=300, ratios="0.1", random_seeds="0,1", full_seeds="1,2", versus="")
    cb.table(args, arms, 0.0)
    written = json.loads((tmp_path / "t.json").read_text())
    base = arms["untrained"]["accuracy"]
    gain = np.mean([arms[k]["accuracy"] for k in ("full", "full t1", "full t2")]) - base
    assert gain < arms["full"]["accuracy"] - base  # seed 0's full arm was the lucky one here
    assert written["versus_random"]["full over 3 training seeds"]["gain"] == pytest.approx(gain)
    assert written["arms"]["m 10%"]["retained"] == pytest.approx((arms["m 10%"]["accuracy"] - base) / gain)
    assert written["arms"]["full"]["retained"] > 1 > written["arms"]["full t2"]["retained"]
    spread = written["versus_random"]["m 10% over 2 training seeds"]
    assert spread["accuracies"] == [arms["m 10%"]["accuracy"], arms["m/t1 10%"]["accuracy"]]
    over = written["versus_random"]["m 10% over 2 seeds"]  # the selection seeds m and m/s1 only
    assert over["accuracy"] == pytest.approx(np.mean([arms["m 10%"]["accuracy"], arms["m/s1 10%"]["accuracy"]]))
    assert "full" not in written["target"] and "full t1" not in written["target"]
    assert (tmp_path / "t.png").exists()


def test_sbs_bench_pools_seeds_run_apart(tmp_path):
    """bench/distill_sbs.py --combine: two processes' seeds make the table one process would
    have made, and runs of another configuration are refused (no model, no data)."""
    import json

    from bench import distill_sbs as sbs

    rng = np.random.default_rng(0)
    init = (rng.random(200) < 0.2).astype(np.int8)
    args = {"steps": 4, "lr": 3e-4, "seeds": "0", "out": "x", "combine": None}
    acc = {("label", 0): 0.3, ("label+rat", 0): 0.35, ("label", 1): 0.25, ("label+rat", 1): 0.4}
    correct = {k: (rng.random(200) < p).astype(np.int8) for k, p in acc.items()}

    def result(seeds):
        runs = [{"arm": arm, "seed": s, "correct": cqa.bits(correct[arm, s]), "label_loss": [1.0, 0.5], "accuracy": 0.0}
                for s in seeds for arm in sbs.ARMS]
        return {"args": {**args, "seeds": ",".join(map(str, seeds))}, "init_correct": cqa.bits(init), "runs": runs,
                "init_accuracy": float(init.mean()), "n_test": 200, "seconds": 1.0}

    together = result([0, 1])
    sbs.report(together, tmp_path / "together")
    for seed in (0, 1):
        (tmp_path / f"s{seed}.json").write_text(json.dumps(result([seed])))
    sbs.combine([tmp_path / "s0.json", tmp_path / "s1.json"], tmp_path / "pooled")
    pooled = json.loads((tmp_path / "pooled.json").read_text())
    for key in ("label_accuracy", "rationale_accuracy", "difference", "ci95", "per_seed_difference", "seeds"):
        assert pooled[key] == together[key], key
    label = np.concatenate([correct["label", 0], correct["label", 1]]).mean()
    assert pooled["label_accuracy"] == pytest.approx(label) and pooled["seeds"] == [0, 1]
    assert (tmp_path / "pooled.png").exists()

    other = result([1]) | {"args": {**args, "seeds": "1", "lr": 1e-4}}
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="lr"):
        sbs.combine([tmp_path / "s0.json", tmp_path / "other.json"], tmp_path / "bad")
    with pytest.raises(SystemExit, match="twice"):
        sbs.combine([tmp_path / "s0.json", tmp_path / "s0.json"], tmp_path / "bad")
    assert cqa.unbits(cqa.bits(init)).tolist() == init.tolist()
