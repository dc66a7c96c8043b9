"""Distilling step-by-step on CommonsenseQA: label-only vs label + PaLM rationale, equal steps.

    taskset -c 0 env OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/distill_sbs.py \\
        --steps 400 --cache-at 24 --train-top 6 --n-test 0 --seeds 0,1 --out /tmp/sbs-s01  # and on core 1
    ... --seeds 2,3 --out /tmp/sbs-s23, then: python bench/distill_sbs.py --combine /tmp/sbs-s01.json \\
        /tmp/sbs-s23.json --out bench/results/distill_sbs-400steps-top6-4seeds    # that result (~75 min)
    ... bench/distill_sbs.py --steps 20 --seeds 0 --n-test 100                     # a quick look
    python bench/distill_sbs.py --device cuda --cache-at 0 --train-top 30 --steps 1218 --lr 5e-5 \
        --seeds 0 --n-test 0                # on a GPU: the whole student, no cache (~7 steps/s on an H100)

Data, prompt format, scorer and student: bench/cqa.py (shared with bench/condense.py). In short:
9,741 train / 1,221 test CommonsenseQA questions with PaLM-540B rationales (Hsieh et al., 2023,
arXiv:2305.02301; a rationale kept only when PaLM's answer is gold, cut before "So the answer
is"); the student is SmolLM2-135M-Instruct with its bottom `--cache-at` blocks frozen and
cached and its top `--train-top` blocks (+ final norm) trained; accuracy = cloze scoring of the
five choices in one packed forward pass per question (bench/cqa.py `Kit.score`).

Arms, both through `tasks.distill.train` (the stage's loop: cross-entropy on the assistant
tokens, kd_weight 0 as the teacher is PaLM text, not logits), same seed, same steps, same
schedule, same batch size:
  label      every step `--batch-size` label examples "[label] <q + choices>" -> "Answer: <choice>"
  label+rat  the paper's multi-task step: the same `--batch-size` label examples plus as many
             rationale examples, L = (1 - a) L_label + a L_rationale (a = --rationale-weight),
             the rationale target its first --rationale-tokens tokens.
Several seeds; the difference (label+rat minus label) comes with a paired bootstrap 95% CI
over test questions (seeds of a question resampled together); each arm is also reported
against the untrained student scored in the same run. Writes --out .json and .png.

`--n-train N` trains both arms on the same fixed random N questions (and the PaLM rationales of
those): the paper's reduced-data setting (it trains on 12.5-100% of each set), where over many
epochs on few questions the rationale task is expected to regularise the label task.

Each run keeps its per-question results, so seeds run in separate processes (one per core) make
one table: `python bench/distill_sbs.py --combine A.json B.json --out C` checks that the runs
share every argument but the seeds and the untrained student's answers, and pools their seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import cqa  # noqa: E402
from tasks import distill as ds  # noqa: E402
from tasks import models  # noqa: E402

RESULTS = ROOT / "bench" / "results"
ARMS = ("label", "label+rat")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=8, help="questions per step")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--rationale-weight", type=float, default=0.5)
    ap.add_argument("--rationale-tokens", type=int, default=64)
    ap.add_argument("--cache-at", type=int, default=24, help="bottom blocks frozen and cached (bench/cqa.py); 0: no cache")
    ap.add_argument("--train-top", type=int, default=2, help="top blocks trained (30 with --cache-at 0: the whole student)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda with --cache-at 0 (the cache runs on the CPU)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--n-test", type=int, default=400, help="first N test questions (0: all 1,221)")
    ap.add_argument("--n-train", type=int, default=0,
                    help="a fixed random draw of N train questions (0: all 9,741); the paper's reduced-data setting")
    ap.add_argument("--out", default=str(RESULTS / "distill_sbs"))
    ap.add_argument("--combine", nargs="+", metavar="JSON", help="pool the seeds of these runs' results instead")
    args = ap.parse_args()
    if args.combine:
        return combine([Path(f) for f in args.combine], Path(args.out))
    started = time.perf_counter()

    kit = cqa.Kit(args.cache_at, args.train_top, device=args.device)
    train_rows, test_rows = cqa.load_rows("train"), cqa.load_rows("test", args.n_test)
    if args.n_train:
        keep = np.random.default_rng(0).choice(len(train_rows), size=args.n_train, replace=False)
        train_rows = [train_rows[i] for i in sorted(keep)]
    pools = cqa.examples(kit.tok, train_rows, args.rationale_tokens)
    load0 = cqa.loadavg()
    print(f"cqa: {len(pools[ds.LABEL])} train questions, {len(pools[ds.RATIONALE])} PaLM rationales kept, "
          f"{len(test_rows)} test; student: {kit.describe()}; cache {kit.loaded} sequences; load avg {load0}", flush=True)
    init = kit.score(kit.student(), test_rows, desc="score untrained")
    kit.save_cache()
    print(f"untrained: accuracy {init['correct'].mean():.4f} (letter scorer {init['letter_correct'].mean():.4f})", flush=True)
    result = {"args": vars(args), "student": kit.describe(), "device": models.device_name(kit.device), "scorer": "cloze: sum log-prob of 'Answer: <choice>' + end-of-turn, argmax of 5",
              "n_train": len(pools[ds.LABEL]), "n_rationales": len(pools[ds.RATIONALE]), "n_test": len(test_rows),
              "init_accuracy": float(init["correct"].mean()), "init_letter_accuracy": float(init["letter_correct"].mean()),
              "init_correct": cqa.bits(init["correct"]), "load_avg_start": load0, "runs": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm in ARMS:
            params = cqa.distill_params(args.steps, args.batch_size, args.lr, args.rationale_weight, seed, arm == "label+rat")
            arm_pools = {ds.LABEL: pools[ds.LABEL], ds.RATIONALE: pools[ds.RATIONALE] if arm == "label+rat" else []}
            student = kit.student()
            t0 = time.perf_counter()
            history = ds.train(student, None, arm_pools, params, kit.tok.pad_token_id)
            seconds = time.perf_counter() - t0
            s = kit.score(student, test_rows, desc=f"score {arm} s{seed}")
            kit.save_cache()
            lo, hi = cqa.paired_bootstrap(init["correct"], s["correct"])
            result["runs"].append({"seed": seed, "arm": arm, "accuracy": float(s["correct"].mean()), "correct": cqa.bits(s["correct"]),
                                   "gain_vs_untrained": float(s["correct"].mean() - init["correct"].mean()), "gain_ci95": [lo, hi],
                                   "gold_logprob": float(s["gold_logprob"].mean()), "margin": float(s["margin"].mean()),
                                   "train_seconds": round(seconds, 1), "load_avg": cqa.loadavg(),
                                   "label_loss": [h["label_loss"] for h in history],
                                   "rationale_loss": [h["rationale_loss"] for h in history]})
            print(f"seed {seed} {arm:>9}: accuracy {s['correct'].mean():.4f} (vs untrained {100 * (s['correct'].mean() - init['correct'].mean()):+.2f} "
                  f"pts, CI [{100 * lo:+.2f}, {100 * hi:+.2f}]); {seconds:.0f} s training, load {cqa.loadavg()}", flush=True)
            del student

    result.update(load_avg_end=cqa.loadavg(), seconds=round(time.perf_counter() - started, 1),
                  cache={"encoded_tokens": kit.encoded_tokens, "encode_seconds": round(kit.encode_seconds, 1)})
    report(result, Path(args.out))


def report(result: dict, out: Path) -> None:
    """The difference over every seed with its paired bootstrap CI, each arm against the untrained
    student; printed, and written to out .json and .png."""
    init = cqa.unbits(result["init_correct"])
    seeds = sorted({r["seed"] for r in result["runs"]})
    by = {(r["arm"], r["seed"]): cqa.unbits(r["correct"]) for r in result["runs"]}
    a, b = (np.stack([by[arm, seed] for seed in seeds]) for arm in ARMS)
    lo, hi = cqa.paired_bootstrap(a, b)
    result.update(seeds=seeds, label_accuracy=float(a.mean()), rationale_accuracy=float(b.mean()),
                  difference=float(b.mean() - a.mean()), ci95=[lo, hi],
                  per_seed_difference=[float(y.mean() - x.mean()) for x, y in zip(a, b)],
                  target_met=bool(b.mean() - a.mean() >= 0.02 and lo > 0))
    for arm, m in (("label", a), ("label+rat", b)):
        glo, ghi = cqa.paired_bootstrap(np.tile(init, (len(m), 1)), m)
        result[f"{arm}_gain_vs_untrained"] = {"gain": float(m.mean() - init.mean()), "ci95": [glo, ghi]}
    print(f"untrained {100 * init.mean():.2f}%  label-only {100 * a.mean():.2f}%  label+rationale {100 * b.mean():.2f}%  "
          f"difference {100 * result['difference']:+.2f} points over seeds {seeds}, paired bootstrap 95% CI "
          f"[{100 * lo:+.2f}, {100 * hi:+.2f}] (target >= +2: {'met' if result['target_met'] else 'NOT met'}); per seed "
          f"{[round(100 * d, 2) for d in result['per_seed_difference']]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))


def combine(paths: list[Path], out: Path) -> None:
    """One table from runs of the same configuration made with other seeds (see the module doc)."""
    results = [json.loads(p.read_text()) for p in paths]
    first = results[0]
    same = {k: v for k, v in first["args"].items() if k not in ("seeds", "out", "combine")}
    for p, r in zip(paths, results):
        if "init_correct" not in r:
            raise SystemExit(f"{p}: no per-question results (made before they were kept)")
        differs = sorted(k for k, v in same.items() if r["args"].get(k) != v)
        if differs or r["init_correct"] != first["init_correct"]:
            raise SystemExit(f"{p}: another configuration than {paths[0]} ({differs or 'the untrained answers'})")
    runs = [run for r in results for run in r["runs"]]
    seen = [(run["arm"], run["seed"]) for run in runs]
    if len(set(seen)) != len(seen):
        raise SystemExit(f"the same arm and seed twice: {sorted(x for x in seen if seen.count(x) > 1)}")
    result = {**first, "args": {**first["args"], "seeds": ",".join(r["args"]["seeds"] for r in results)},
              "combined_from": [str(p) for p in paths], "runs": runs,
              "seconds": round(sum(r["seconds"] for r in results), 1)}
    report(result, out)


def plot(result: dict, path: Path) -> None:
    """Label-task training curves; each seed's two arms, paired; each seed's difference and the
    pooled one with its CI against the +2 target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4))
    for r in result["runs"]:
        loss = np.convolve(r["label_loss"], np.ones(10) / 10, mode="valid")
        a.plot(range(10, len(loss) + 10), loss, color="C0" if r["arm"] == "label" else "C1", alpha=0.6)
    a.plot([], [], color="C0", label="label"), a.plot([], [], color="C1", label="label+rat")
    a.set(xlabel="step", ylabel="label-task CE (10-step mean)", title="training, every seed")
    a.legend()
    acc = {(r["arm"], r["seed"]): 100 * r["accuracy"] for r in result["runs"]}
    for seed in result["seeds"]:
        b.plot([0, 1], [acc["label", seed], acc["label+rat", seed]], "o-", color="grey", alpha=0.6)
    for j, arm in enumerate(ARMS):
        b.plot([j - 0.2, j + 0.2], [100 * result["label_accuracy" if j == 0 else "rationale_accuracy"]] * 2, color=f"C{j}", lw=3)
    b.axhline(100 * result["init_accuracy"], color="grey", ls="--", label="untrained (same run)")
    b.set_xticks(range(len(ARMS)), ARMS)
    b.set_xlim(-0.5, 1.5)
    b.set(ylabel=f"CQA test accuracy (%), n={result['n_test']}", title="each seed (grey) and the mean")
    b.legend(loc="lower right")
    diffs = [100 * d for d in result["per_seed_difference"]]
    c.bar(range(len(diffs)), diffs, color="C2", alpha=0.6)
    lo, hi = (100 * x for x in result["ci95"])
    c.errorbar([len(diffs)], [100 * result["difference"]], yerr=[[100 * result["difference"] - lo], [hi - 100 * result["difference"]]],
               fmt="o", color="k", capsize=6)
    c.axhline(2, color="C3", ls="--", label="target +2")
    c.axhline(0, color="grey", lw=0.8)
    c.set_xticks(range(len(diffs) + 1), [f"seed {s}" for s in result["seeds"]] + ["all"])
    c.set(ylabel="label+rat minus label (points)",
          title=f"{100 * result['difference']:+.2f} pts, paired bootstrap 95% CI [{lo:+.2f}, {hi:+.2f}]")
    c.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
