"""Does a condensed r% train the student as well as all the data? CQA, one run, all arms.

    taskset -c 0 env OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/condense.py \\
        --steps 60 --n-test 200        # the run in bench/results/condense-cqa.json (see its "args")

Data, prompt format, scorer and student: bench/cqa.py (shared with bench/distill_sbs.py):
9,741 CommonsenseQA train questions with PaLM-540B rationales (kept when PaLM's answer is
gold), the first --n-test of the 1,221 test questions. Rows get label = the gold letter (a-e)
and one group, `qtype` (the question's wh-word), so the quotas have a label and a group
partition to keep. Student: SmolLM2-135M-Instruct, bottom --cache-at blocks frozen and cached,
top --train-top blocks (+ final norm) trained. Every arm trains a fresh student through
tasks.distill.train (the stage's loop, CE on the assistant tokens, kd_weight 0: the teacher
is PaLM text) for the same --steps of --batch questions (each step --batch label and --batch
rationale examples, the paper's multi-task step; L = (1 - a) L_label
+ a L_rationale), same seed and schedule; only the rows differ. With the same seed and steps
the "full" arm is the label+rat arm of bench/distill_sbs.py.

Arms: untrained; full; for r in --ratios: condensed (tasks.condense.run with each --method, its
quotas over label + qtype + kept-rationale strata and its de-duplication) and random (the same
quotas, seeded order, no de-duplication). `--method kcenter,gradmatch` gives each method its own
arm (ifd / gradmatch score with a --scorer-layers cut of the teacher; prototype ranks by LSA
distance to k-means centroids, near first); `kcenter+first` sets condense.rationale_rows: first
(rows with a kept PaLM rationale first), `random+first` is the random arm with that setting;
`facility@answer+first` sets condense.facility_on: answer (facility location over the gold answers).
`kcenter/s1` is kcenter with selection seed 1. One seed's subset can be lucky, so the arms of one
method with several seeds are also read together: their mean against the mean random draw, and
the target on that mean ("over seeds"). `random+first/t1` trains the subset of `random+first`
with training seed 1 (another draw order over the same rows): how much of an arm's spread is
the training order rather than the rows.

`--full-seeds 1,2` also trains the full set with those training seeds ("full t1", "full t2").
The full-data gain, the denominator of every retained share, is then the mean over the full
arms: with one full arm the whole table leans on a single training run.

`--reuse earlier.json` takes the arms of an earlier run with the same training setup (steps,
batch, lr, rationale weight and tokens, cache-at, train-top, n-test, seed) into the table
instead of training them again, with their per-question results, so a new method is read
against the same untrained, full and random arms; the table marks them "(reused)". That
is sound because an arm's numbers depend only on its rows and that setup: the untrained, full
and random arms came out identical in every repeated run (bench/README.md). So each arm this run
builds is taken from --reuse only when the earlier arm's row digest (`rows_digest`, the ids it
trained on) matches the rows this run gives it; otherwise it is trained again (a change to
tasks.condense changes the subsets). Earlier arms this run does not build are left out. From a
run that differs only in training (another --steps, --lr ...) only the untrained arm, which
trains nothing, is taken; another cache-at or n-test is refused.

`--workers 2` trains two arms at once, each worker a process with its own Kit (~5 GB with the
bottom-24 cache) and cores / workers threads; the table and the numbers are the same as with
one worker (every arm is a fresh student with the same seed), the wall time about halves.

Metric: accuracy on the test questions by the cloze scorer (bench/cqa.py `Kit.score`: the five
"Answer: <choice>" continuations in one packed forward pass, argmax of their log-probs).
Gain = accuracy(arm) - accuracy(untrained, same run); retained = gain(arm) / gain(full), gain(full)
the mean over the full arms.
95% intervals from a paired bootstrap over test questions (the same resamples for every arm).
Writes --out (.json with the table, .png).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import cqa  # noqa: E402
from tasks import condense as cz  # noqa: E402
from tasks import distill as ds  # noqa: E402
from tasks.params import Condense  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default="kcenter",
                    help="a method or several, comma-separated (kcenter,gradmatch): an arm each; per ratio as --random-seeds "
                         "('kcenter;0.1=kcenter,kcenter/s1'); ccs/s1: selection seed 1; "
                         "'': the random arms only")
    ap.add_argument("--scorer-layers", type=int, default=4, help="ifd / gradmatch scorer: first + last n/2 teacher blocks (0: all)")
    ap.add_argument("--ratios", default="0.05,0.1,0.2")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=8, help="questions per step (each gives a label and a rationale example)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--rationale-weight", type=float, default=0.5)
    ap.add_argument("--rationale-tokens", type=int, default=64)
    ap.add_argument("--cache-at", type=int, default=24, help="bottom blocks frozen and cached (bench/cqa.py)")
    ap.add_argument("--train-top", type=int, default=2, help="top blocks trained")
    ap.add_argument("--n-test", type=int, default=200, help="first N test questions (0: all 1,221)")
    ap.add_argument("--random-seeds", default="0",
                    help="seeds of the random arms at every ratio, e.g. 0,1; '0,1;0.1=0,1,2,3': four draws at 10%%, two elsewhere")
    ap.add_argument("--seed", type=int, default=0, help="training seed of every arm (but a method's /tN and --full-seeds)")
    ap.add_argument("--full-seeds", default="", help="more training seeds of the full arm, e.g. 1,2: the full gain is their mean")
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--out", default="bench/results/condense-cqa.json")
    ap.add_argument("--workers", type=int, default=1,
                    help="arms trained at once, each in its own process with its own cache copy (~5 GB each)")
    ap.add_argument("--versus", default="random+first",
                    help="each method over its selection seeds minus this one over its seeds (paired bootstrap)")
    ap.add_argument("--reuse", default="", help="earlier runs' .json (comma-separated) with the same training setup: "
                    "their arms enter the table as measured instead of being trained again (another --steps, --lr ...: "
                    "only the untrained arm)")
    args = ap.parse_args()
    started = time.perf_counter()
    reused = load_reused(args)
    train_rows = cqa.load_rows("train")
    print(f"train {len(train_rows)} ({sum(bool(r['rationale']) for r in train_rows)} with a PaLM rationale); "
          f"{args.steps} steps x {args.batch}; {args.workers} worker(s); load {cqa.loadavg()}", flush=True)

    # every arm in the order of the table: untrained, full (the arms below are read against it), then
    # each ratio's condensed and random arms, condensed lazily so the first arms train meanwhile. A
    # reused arm stands in for one only when it was trained on exactly the rows this run gives it.
    done: dict[str, dict] = {}
    order: list[str] = []

    def record(result: dict, show: bool = True) -> None:
        done[result["name"]] = result
        if show and "untrained" in done and "full" in done:  # after every trained arm: a partial table survives a cut-off run
            table(args, {n: done[n] for n in order if n in done}, started)

    def arms():
        fulls = [("full", train_rows, {})] + [(f"full t{t}", train_rows, {"train_seed": int(t)})
                                               for t in filter(None, args.full_seeds.split(","))]
        for name, rows, extra in itertools.chain([("untrained", [], {"n": 0})], fulls,
                                                 ((name, kept, extra) for _, name, kept, extra in
                                                  subsets(train_rows, args.method, args.ratios, args.random_seeds, args.scorer_layers))):
            order.append(name)
            if same_rows(reused.get(name), rows):
                record(reused.pop(name), show=False)  # one table once the reused arms are in, not one per arm
                continue
            if reused.pop(name, None) is not None:
                print(f"{name}: trained again (the reused arm was trained on other rows)", flush=True)
            yield name, rows if name != "untrained" else None, extra
        if reused:
            print(f"not reused (not built by this run): {', '.join(reused)}", flush=True)

    jobs = arms()
    first = next(jobs, None)
    if first is None:  # every arm reused: only the table
        return table(args, {n: done[n] for n in order}, started)
    jobs = itertools.chain([first], jobs)
    if args.workers <= 1:
        _init(vars(args), threads=0)
        for name, rows, extra in jobs:
            record(run_arm(name, rows, extra))
        return
    threads = max(1, len(os.sched_getaffinity(0)) // args.workers)
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn"), initializer=_init,
                             initargs=(vars(args), threads)) as pool:
        futures = [pool.submit(run_arm, name, rows, extra) for name, rows, extra in jobs]
        for f in as_completed(futures):
            record(f.result())


# what decides an arm's numbers besides its rows: arms of runs that agree on all of these are
# interchangeable (every arm is a fresh student with the same seed; repeated runs have matched
# bit for bit, bench/README.md)
SETUP = ("steps", "batch", "lr", "rationale_weight", "rationale_tokens", "cache_at", "train_top", "n_test", "seed")
UNTRAINED_SETUP = ("cache_at", "n_test")  # the untrained arm trains nothing: only these decide it


def load_reused(args) -> dict[str, dict]:
    """Arms (with their per-question results) of the --reuse runs, in their table order."""
    arms: dict[str, dict] = {}
    for path in filter(None, args.reuse.split(",")):
        earlier = json.loads(Path(path).read_text())
        differ = {k: (earlier["args"].get(k), getattr(args, k)) for k in SETUP if earlier["args"].get(k) != getattr(args, k)}
        usable = earlier["arms"] if not differ else {n: a for n, a in earlier["arms"].items() if n == "untrained"}
        if any(k in differ for k in UNTRAINED_SETUP) or not usable:
            raise SystemExit(f"--reuse {path}: another training setup {differ}")
        if differ:  # another budget (--steps ...): only its untrained arm carries over
            print(f"--reuse {path}: another training setup {differ}; reusing its untrained arm only", flush=True)
        for name, a in usable.items():
            if "correct_bits" not in a:
                raise SystemExit(f"--reuse {path}: arm {name!r} has no per-question results (run before they were saved)")
            if name not in arms:
                arms[name] = {**a, "correct": cqa.unbits(a.pop("correct_bits")), "reused_from": path}
    if arms:
        print(f"reused {len(arms)} arms: {', '.join(arms)}", flush=True)
    return arms


def rows_digest(rows: list[dict] | None) -> str:
    """What an arm was trained on: a digest of its rows' ids (order-free)."""
    return hashlib.blake2b("\n".join(sorted(r["id"] for r in rows or [])).encode(), digest_size=12).hexdigest()


def same_rows(arm: dict | None, rows: list[dict]) -> bool:
    """Whether a reused `arm` was trained on `rows`. Arms saved before digests were kept count only
    when their row count settles it (untrained: none, full: all)."""
    if arm is None:
        return False
    if "rows_digest" in arm:
        return arm["rows_digest"] == rows_digest(rows)
    return arm["name"] in ("untrained", "full") and arm["n"] == len(rows)


_WORKER: dict = {}  # per process: the Kit, the test rows, the training params


def _init(args: dict, threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
    a = argparse.Namespace(**args)
    kit = cqa.Kit(a.cache_at, a.train_top)
    _WORKER.update(kit=kit, args=a, test=cqa.load_rows("test", a.n_test),
                   params=cqa.distill_params(a.steps, a.batch, a.lr, a.rationale_weight, a.seed))
    print(f"{kit.describe()}; cache {kit.loaded} sequences; test {len(_WORKER['test'])}", flush=True)


def run_arm(name: str, rows: list[dict] | None, extra: dict) -> dict:
    """Train a fresh student on `rows` (None: the untrained student) and score it on the test rows;
    `extra["train_seed"]`, when there, replaces the run's training seed."""
    kit, a = _WORKER["kit"], _WORKER["args"]
    tokens0, seconds0 = kit.encoded_tokens, kit.encode_seconds  # the Kit counts over its whole process
    student = kit.student()
    if rows is not None:
        t0 = time.perf_counter()
        params = _WORKER["params"].model_copy(update={"seed": extra.get("train_seed", a.seed)})
        ds.train(student, None, cqa.examples(kit.tok, rows, a.rationale_tokens), params, kit.tok.pad_token_id)
        extra = {**extra, "n": len(rows), "train_seconds": round(time.perf_counter() - t0, 1)}
    t0 = time.perf_counter()
    s = kit.score(student, _WORKER["test"], desc=f"score {name}")
    kit.save_cache()
    print(f"{name:>16}: accuracy {s['correct'].mean():.4f}  gold log-prob {s['gold_logprob'].mean():.3f}  {extra}", flush=True)
    return {**extra, "name": name, "rows_digest": rows_digest(rows), "correct": s["correct"], "accuracy": float(s["correct"].mean()),
            "gold_logprob": float(s["gold_logprob"].mean()), "margin": float(s["margin"].mean()),
            "eval_seconds": round(time.perf_counter() - t0, 1), "load_avg": cqa.loadavg(), "student": kit.describe(),
            "cache": {"encoded_tokens": kit.encoded_tokens - tokens0, "encode_seconds": round(kit.encode_seconds - seconds0, 1)}}


def subsets(train_rows: list[dict], methods: str, ratios: str, random_seeds: str, scorer_layers: int = 4):
    """(ratio, arm name, rows, report extras) of every condensed and random arm, 10% first:
    tasks.condense.run with each of `methods` (its quotas over label + qtype + kept-rationale
    strata and its de-duplication) and random (the same quotas, seeded order, no de-duplication)."""
    for ratio in sorted([float(r) for r in ratios.split(",")], key=lambda r: abs(r - 0.1)):
        for method in at_ratio(methods, ratio):
            spec, _, train_seed = method.partition("/t")  # "random+first/t1": that subset, training seed 1
            kept, rep = cz.run(train_rows, ("qtype",), arm_params(spec, ratio, scorer_layers),
                               domain=cqa.CqaDomain())  # loads its scorer if it needs one
            yield ratio, f"{method} {ratio:.0%}", kept, {"condense_seconds": rep["seconds"], "dropped": rep["ledger"]["dropped"],
                                                         "cover_radius": rep["diversity"]["cover_radius"],
                                                         **({"train_seed": int(train_seed)} if train_seed else {})}
        for seed in draws(random_seeds, ratio):
            kept, rep = cz.run(train_rows, ("qtype",), arm_params("random", ratio, draw=seed))
            yield ratio, f"random {ratio:.0%} s{seed}", kept, {"cover_radius": rep["diversity"]["cover_radius"]}


def _is_full(name: str) -> bool:
    """Whether an arm trained on all the rows: "full", or "full t1" (--full-seeds)."""
    return re.fullmatch(r"full( t\d+)?", name) is not None


def _unseeded(method: str) -> str:
    """The method without its selection seed: "kcenter+first/s2" -> "kcenter+first"."""
    return re.sub(r"/s\d+$", "", method)


def _untimed(method: str) -> str:
    """The method without its training seed: "random+first/t1" -> "random+first"."""
    return method.partition("/t")[0]


def at_ratio(spec: str, ratio: float) -> list[str]:
    """The items of a per-ratio list at `ratio`: "a,b" at every ratio, "a,b;0.1=a,b,c" three at
    10% and two elsewhere (--method and --random-seeds: more arms where the verdict is read)."""
    default, at = "", {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        r, eq, items = part.rpartition("=")
        if eq:
            at[round(float(r), 6)] = items
        else:
            default = items
    return [x.strip() for x in at.get(round(ratio, 6), default).split(",") if x.strip()]


def draws(random_seeds: str, ratio: float) -> list[int]:
    """The random seeds at `ratio` from --random-seeds (at_ratio: "0,1;0.1=0,1,2,3")."""
    return [int(s) for s in at_ratio(random_seeds, ratio)]


def arm_params(method: str, ratio: float, scorer_layers: int = 4, draw: int = 0) -> Condense:
    """The Condense params of one arm: `method` as --method spells it ("ccs/s1": selection seed 1;
    "kcenter+first": rationale_rows first), or "random" with seed `draw` (the baseline: quotas, no
    de-duplication; "random+first" is the same but for rationale_rows)."""
    if method == "random":
        return Condense(method="random", ratio=ratio, seed=draw, dedup="none")
    spec, _, seed = method.partition("/s")
    kind, _, rationale_rows = spec.partition("+")
    kind, _, on = kind.partition("@")  # "facility@answer": condense.facility_on answer
    return Condense(method=kind, ratio=ratio, seed=int(seed or 0), scorer_layers=scorer_layers,
                    rationale_rows=rationale_rows or "proportional", **({"facility_on": on} if on else {}),
                    **({"dedup": "none"} if kind == "random" else {}))


def table(args, arms: dict, started: float) -> None:
    """Print the table of the arms measured so far; write it with the numbers to --out (.json, .png)."""
    rng = np.random.default_rng(0)  # paired bootstrap over test questions: one resample set for all arms
    n_test = len(arms["untrained"]["correct"])
    boots = rng.integers(0, n_test, size=(args.boot, n_test))

    def resampled(*group) -> np.ndarray:
        """Accuracy in every bootstrap resample, averaged over the arms of `group` (the expected draw)."""
        return np.mean([a["correct"][boots].mean(1) for a in group], axis=0)

    def ci95(x: np.ndarray, percentile=np.percentile) -> list[float]:
        return [float(percentile(x, 2.5)), float(percentile(x, 97.5))]

    # the full-data gain: the mean over the full arms (one per training seed), per resample
    base, fulls = arms["untrained"], [a for n, a in arms.items() if _is_full(n)]
    base_b, full_gain = resampled(base), float(np.mean([f["accuracy"] for f in fulls])) - base["accuracy"]
    full_b = resampled(*fulls) - base_b
    full_gain_ci = ci95(full_b)

    def retained(acc: float, acc_b: np.ndarray) -> tuple[float, list[float]]:
        """Share of the full-data gain an accuracy keeps, with its CI."""
        ret_b = (acc_b - base_b) / np.where(full_b == 0, np.nan, full_b)
        return (acc - base["accuracy"]) / full_gain if full_gain else float("nan"), ci95(ret_b, np.nanpercentile)

    lines = ["| arm | rows | passes | accuracy (95% CI) | gain vs untrained (95% CI) | retained of full gain (95% CI) | gold log-prob | train s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, a in arms.items():
        acc_b = resampled(a)
        ret, ret_ci = retained(a["accuracy"], acc_b)
        a.update(gain=a["accuracy"] - base["accuracy"], gain_ci=ci95(acc_b - base_b), retained=ret, retained_ci=ret_ci,
                 accuracy_ci=ci95(acc_b))
        a["passes"] = args.steps * args.batch / a["n"] if a["n"] else 0.0  # label examples drawn per row: repetition
        lines.append(f"| {name}{' (reused)' if a.get('reused_from') else ''} | {a['n']} | {a['passes']:.2f} | {a['accuracy']:.4f} ({a['accuracy_ci'][0]:.3f}-{a['accuracy_ci'][1]:.3f}) | "
                     f"{a['gain']:+.4f} ({a['gain_ci'][0]:+.3f} to {a['gain_ci'][1]:+.3f}) | {a['retained']:.2f} "
                     f"({a['retained_ci'][0]:.2f} to {a['retained_ci'][1]:.2f}) | {a['gold_logprob']:.3f} | {a.get('train_seconds', '')} |")
    verdicts, target = {}, {}
    if len(fulls) > 1:
        accs = [f["accuracy"] for f in fulls]
        verdicts[f"full over {len(fulls)} training seeds"] = {"accuracy": float(np.mean(accs)), "train_sd": float(np.std(accs, ddof=1)),
                                                            "gain": full_gain, "gain_ci": full_gain_ci}
        lines.append(f"\nfull over {len(fulls)} training seeds: accuracy {np.mean(accs):.4f} (sd {np.std(accs, ddof=1):.4f}), gain "
                     f"{full_gain:+.4f} (95% CI {full_gain_ci[0]:+.4f} to {full_gain_ci[1]:+.4f}): the denominator of every retained share")
    ratios = [float(r) for r in args.ratios.split(",")]
    draws_at = {ratio: [v for k, v in arms.items() if k.startswith(f"random {ratio:.0%} ")] for ratio in ratios}
    # every condensed arm in the table (this run's methods and reused ones), each against every random draw
    methods = list(dict.fromkeys(n.rsplit(" ", 1)[0] for n in arms if n != "untrained" and not n.startswith("random ") and not _is_full(n)))
    for method in methods:
        for ratio in ratios:
            c, rs = arms.get(f"{method} {ratio:.0%}"), draws_at[ratio]
            if c is None:
                continue
            for r in rs:
                seed = r["name"].rsplit(" s", 1)[1]
                ci = ci95(resampled(c) - resampled(r))
                verdicts[f"{method} {ratio:.0%} s{seed}"] = {"minus_random": c["accuracy"] - r["accuracy"], "ci95": ci}
                lines.append(f"\n{method} {ratio:.0%} minus random s{seed}: accuracy {c['accuracy'] - r['accuracy']:+.4f} "
                             f"(95% CI {ci[0]:+.4f} to {ci[1]:+.4f})")
            if len(rs) > 1:  # against the expected random draw: the mean over draws, per bootstrap resample
                ci = ci95(resampled(c) - resampled(*rs))
                accs = [r["accuracy"] for r in rs]
                v = verdicts[f"{method} {ratio:.0%} mean"] = {"minus_random": c["accuracy"] - float(np.mean(accs)), "ci95": ci,
                                                              "draws": len(rs), "random_sd": float(np.std(accs, ddof=1))}
                lines.append(f"\n{method} {ratio:.0%} minus the mean of {len(rs)} random draws ({np.mean(accs):.4f}, sd "
                             f"{v['random_sd']:.4f}): accuracy {v['minus_random']:+.4f} (95% CI {ci[0]:+.4f} to {ci[1]:+.4f})")
        c10, r10 = arms.get(f"{method} 10%"), [v for k, v in arms.items() if k.startswith("random 10%")]
        if c10 is not None and r10:
            t = target[method] = {"retained_10": c10["retained"], "retained_10_ci": c10["retained_ci"],
                                  "beats_random_10": all(c10["accuracy"] > r["accuracy"] for r in r10),
                                  "full_gain_ci_excludes_0": full_gain_ci[0] > 0}
            t["met"] = bool(t["retained_10"] >= 0.9 and t["beats_random_10"] and t["full_gain_ci_excludes_0"])
            lines.append(f"\ntarget for {method} (condensed 10% retains >= 90% of the full gain and beats random 10%): "
                         f"{'met' if t['met'] else 'NOT met'} {t}")
    # one subset over training seeds ("random+first", "random+first/t1", ...): the spread the draw
    # order alone gives, the noise floor of every comparison above
    for spec, replicas in itertools.groupby(sorted(methods, key=_untimed), key=_untimed):
        replicas = list(replicas)
        for ratio in ratios:
            accs = [arms[f"{m} {ratio:.0%}"]["accuracy"] for m in replicas if f"{m} {ratio:.0%}" in arms]
            if len(accs) > 1:
                v = verdicts[f"{spec} {ratio:.0%} over {len(accs)} training seeds"] = {
                    "accuracies": accs, "accuracy": float(np.mean(accs)), "train_sd": float(np.std(accs, ddof=1))}
                lines.append(f"\n{spec} {ratio:.0%}, one subset over {len(accs)} training seeds: accuracy {v['accuracy']:.4f} "
                             f"(sd {v['train_sd']:.4f}; {', '.join(f'{x:.4f}' for x in accs)})")
    # a method over its selection seeds ("kcenter+first", "kcenter+first/s1", ...): one seed's subset
    # can be lucky (prototype's, kcenter+first's), so the method's expected subset is the seeds' mean
    over_seeds = {}  # (family, ratio) -> its arms, for --versus
    for family, seeded in itertools.groupby(sorted(methods, key=_unseeded), key=_unseeded):
        seeded = list(seeded)
        for ratio in ratios:
            cs, rs = [arms[f"{m} {ratio:.0%}"] for m in seeded if f"{m} {ratio:.0%}" in arms], draws_at[ratio]
            if len(cs) < 2 or not rs:
                continue
            over_seeds[family, ratio] = cs
            acc, mean_b = float(np.mean([c["accuracy"] for c in cs])), resampled(*cs)
            ret, ret_ci = retained(acc, mean_b)
            v = verdicts[f"{family} {ratio:.0%} over {len(cs)} seeds"] = {
                "accuracy": acc, "seed_sd": float(np.std([c["accuracy"] for c in cs], ddof=1)),
                "retained": ret, "retained_ci": ret_ci,
                "minus_random": acc - float(np.mean([r["accuracy"] for r in rs])),
                "ci95": ci95(mean_b - resampled(*rs)), "draws": len(rs)}
            lines.append(f"\n{family} {ratio:.0%} over {len(cs)} selection seeds: accuracy {acc:.4f} (sd {v['seed_sd']:.4f}), "
                         f"retained {v['retained']:.2f} ({v['retained_ci'][0]:.2f} to {v['retained_ci'][1]:.2f}), minus the "
                         f"mean of {len(rs)} random draws {v['minus_random']:+.4f} (95% CI {v['ci95'][0]:+.4f} to {v['ci95'][1]:+.4f})")
            if ratio == 0.1:
                t = target[f"{family} over seeds"] = {"seeds": len(cs), "retained_10": v["retained"],
                                                     "beats_mean_random_10": v["minus_random"] > 0,
                                                     "full_gain_ci_excludes_0": full_gain_ci[0] > 0}
                t["met"] = bool(t["retained_10"] >= 0.9 and t["beats_mean_random_10"] and t["full_gain_ci_excludes_0"])
                lines.append(f"\ntarget for {family} over {len(cs)} seeds (their mean retains >= 90% and beats the mean "
                             f"random 10%): {'met' if t['met'] else 'NOT met'}")
    # one method against another, each over its selection seeds, the same resamples (--versus)
    for (family, ratio), cs in over_seeds.items():
        vs = over_seeds.get((args.versus, ratio))
        if vs is None or family == args.versus:
            continue
        diff = float(np.mean([c["accuracy"] for c in cs]) - np.mean([c["accuracy"] for c in vs]))
        ci = ci95(resampled(*cs) - resampled(*vs))
        verdicts[f"{family} {ratio:.0%} over seeds minus {args.versus}"] = {"minus": diff, "ci95": ci,
                                                                           "seeds": [len(cs), len(vs)]}
        lines.append(f"\n{family} {ratio:.0%} over {len(cs)} seeds minus {args.versus} over {len(vs)}: accuracy "
                     f"{diff:+.4f} (95% CI {ci[0]:+.4f} to {ci[1]:+.4f})")
    lines.append(f"\nelapsed {time.perf_counter() - started:.0f} s; load average (1/5/15 min) {cqa.loadavg()}")
    print("\n".join(lines), flush=True)
    out = Path(args.out)
    result = {"args": vars(args), "student": arms["full"]["student"], "n_test": n_test,
              "scorer": "cloze: sum log-prob of 'Answer: <choice>' + end-of-turn, argmax of 5", "table": lines,
              "target": target, "versus_random": verdicts, "seconds": round(time.perf_counter() - started, 1),
              "load_avg_end": cqa.loadavg(), "arms": {k: {**{kk: vv for kk, vv in v.items() if kk != "correct"},
                             "correct_bits": cqa.bits(v["correct"])}  # per test question, for re-analysis
                         for k, v in arms.items()}}
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    plot(result, out.with_suffix(".png"))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = {k: v for k, v in result["arms"].items() if k != "untrained"}
    names = list(arms)
    fig, (a, b) = plt.subplots(1, 2, figsize=(max(12.0, 0.7 * len(names)), 4.5))  # wide enough for every arm's name
    acc = [100 * arms[n]["accuracy"] for n in names]
    err = np.array([[100 * (arms[n]["accuracy"] - arms[n]["accuracy_ci"][0]), 100 * (arms[n]["accuracy_ci"][1] - arms[n]["accuracy"])]
                    for n in names]).T
    colors = ["C0" if _is_full(n) else "C1" if not n.startswith("random ") else "C2" for n in names]
    a.bar(range(len(names)), acc, yerr=err, color=colors, alpha=0.7, capsize=3)
    a.axhline(100 * result["arms"]["untrained"]["accuracy"], color="grey", ls="--", label="untrained (same run)")
    a.axhline(20, color="lightgrey", ls=":", label="chance")
    draws = [100 * v["accuracy"] for k, v in arms.items() if k.startswith("random 10% ")]
    if len(draws) > 1:
        a.axhline(np.mean(draws), color="C2", ls="--", label=f"mean of {len(draws)} random 10% draws")
    a.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    a.set(ylabel=f"CQA test accuracy (%), n={result['n_test']}", title="accuracy (95% CI)")
    a.legend(loc="lower right")
    ret = [arms[n]["retained"] for n in names]
    rerr = np.array([[max(0.0, r - arms[n]["retained_ci"][0]), max(0.0, arms[n]["retained_ci"][1] - r)] for r, n in zip(ret, names)]).T
    b.bar(range(len(names)), ret, yerr=rerr, color=colors, alpha=0.7, capsize=3)
    b.axhline(0.9, color="red", ls=":", label="target 0.9 (condensed 10%)")
    label = "mean over selection seeds"
    for key, v in result["versus_random"].items():  # a method over its selection seeds: its mean across its bars
        if " over " in key and "retained" in v:  # not the training-seed spreads
            family, ratio = key.split(" over ")[0].rsplit(" ", 1)
            at = [i for i, n in enumerate(names) if n.endswith(f" {ratio}") and _unseeded(n.rsplit(" ", 1)[0]) == family]
            b.hlines(v["retained"], min(at) - 0.4, max(at) + 0.4, color="black", lw=2, label=label)
            label = None  # one legend entry
    b.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    b.set(ylabel="share of the full-data gain", title="retained gain (95% CI)")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
