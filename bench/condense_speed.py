"""Condensation speed at 10,000 records, end to end (model load, embeddings / gradients, selection).

    taskset -c 0 python bench/condense_speed.py --n 1000,10000 --methods random,kcenter,gradmatch

Input: CQA train (9,741, `../shared/data/distill_step_by_step/cqa`, bench/cqa.py's prompt format)
+ the first GSM8K train questions up to each --n (default 1,000 and 10,000 rows), label = answer
letter (CQA) or "gsm8k", group = source. Each method condenses to --ratio through
tasks.condense.run (de-duplication, quotas, report included); the baseline is `random` at the
same n in the same run. Target (issue 7): k-center or gradient matching on 10,000 rows in
<= 300 s on 2 cores; run it pinned to one core (`taskset -c 0`) for the stricter check.

Per run it prints and saves wall and CPU seconds per phase: gradmatch = model load, gradient
sketches (tokenising + forward passes + head; the tokenising alone is timed apart on the same
rows), CRAIG greedy, and the rest (dedup, quotas, LSA embedding for the report, diversity).
CPU seconds are this process's; on a shared core wall / CPU shows how much the neighbours took.
Writes bench/results/condense_speed-<tag>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tqdm.auto import tqdm

from bench.cqa import CqaDomain, load_rows
from tasks import condense as cz
from tasks.condensation import gradmatch, scoring
from tasks.params import Condense

GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
TARGET_S = 300.0


def load(n: int) -> list[dict]:
    rows = [dict(r, groups={"source": "cqa"}) for r in load_rows("train")]
    with GSM8K.open() as f:
        for i, line in enumerate(f):
            if len(rows) >= n:
                break
            g = json.loads(line)
            rows.append({"id": f"gsm8k-{i:05d}", "text": g["question"], "label": "gsm8k", "groups": {"source": "gsm8k"},
                         "rationale": g["answer"].split("####")[0].strip(), "kept": True})
    return rows[:n]


class Clock:
    """Wall and CPU seconds since start."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> dict:
        return {"wall": round(time.perf_counter() - self.wall, 2), "cpu": round(time.process_time() - self.cpu, 2)}


def run_one(rows: list[dict], method: str, args) -> dict:
    p = Condense(method=method, ratio=args.ratio, embedding=args.embedding, scorer_layers=args.scorer_layers,
                 scorer_max_length=args.max_length)
    clock = Clock()
    phases: dict[str, dict] = {}
    scorer = None
    if method in ("ifd", "gradmatch"):
        scorer = scoring.load_scorer(p.scorer, p.scorer_layers)
        phases["model load"] = clock.lap()
    before = clock.lap()
    kept, rep = cz.run(rows, ("source",), p, domain=CqaDomain(), scorer=scorer)
    total = clock.lap()
    s = rep["scores"]
    if method == "gradmatch":
        phases["gradient sketches"] = {"wall": s["gradient_seconds"]}
        phases["CRAIG greedy"] = {"wall": s["greedy_seconds"]}
    elif method == "ifd":
        phases["IFD scores"] = {"wall": s["scorer_seconds"]}
    phases["embedding (LSA)"] = {"wall": rep["embedding"]["seconds"]}
    phases["rest (dedup, quotas, report)"] = {
        "wall": round(total["wall"] - before["wall"] - sum(v["wall"] for k, v in phases.items() if k != "model load"), 2)}
    out = {"n": len(rows), "method": method, "kept": len(kept), "seconds": total["wall"], "cpu_seconds": total["cpu"],
           "phases": phases, "scores": s, "unmet_quotas": len(rep["unmet_quotas"]),
           "cover_radius": rep["diversity"]["cover_radius"], "dropped": rep["ledger"]["dropped"]}
    if method == "gradmatch":  # the tokenising share of "gradient sketches", timed apart
        t = Clock()
        gradmatch.label_pairs(CqaDomain(), scorer[1], rows, p.scorer_max_length)
        out["tokenise_seconds"] = t.lap()
    return out


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(k for r in results for k in r["phases"]))
    labels = [f"{r['method']} n={r['n']:,}" for r in results]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(results) + 1.8))
    left = [0.0] * len(results)
    for name in names:
        w = [max(r["phases"].get(name, {}).get("wall", 0.0), 0.0) for r in results]
        ax.barh(labels, w, left=left, label=name)
        left = [a + b for a, b in zip(left, w)]
    for i, r in enumerate(results):
        ax.text(r["seconds"], i, f" {r['seconds']:.1f} s", va="center", fontsize=8)
    ax.axvline(TARGET_S, color="k", ls="--", lw=1, label="target 300 s")
    ax.set_xlabel("wall seconds, one pinned core")
    ax.set_title("condense speed per phase (CQA + GSM8K)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="1000,10000", help="row counts, comma-separated")
    ap.add_argument("--ratio", type=float, default=0.1)
    ap.add_argument("--methods", default="random,kcenter,gradmatch")
    ap.add_argument("--embedding", default="lsa")
    ap.add_argument("--scorer-layers", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (see bench/condense.py)")
    ap.add_argument("--tag", default=time.strftime("%Y%m%d-%H%M"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    sizes = [int(x) for x in args.n.split(",")]
    methods = args.methods.split(",")
    results = []
    all_rows = load(max(sizes))
    for n, method in tqdm([(n, m) for n in sizes for m in methods], desc="condense_speed", unit="run"):
        r = run_one(all_rows[:n], method, args)
        base = next((x["seconds"] for x in results if x["n"] == n and x["method"] == "random"), None)
        r["ratio_to_random"] = round(r["seconds"] / base, 2) if base else None
        results.append(r)
        phases = ", ".join(f"{k} {v['wall']:.1f} s" for k, v in r["phases"].items())
        tqdm.write(f"{method:>10} n={n:>6,}: -> {r['kept']} in {r['seconds']:.1f} s wall ({r['cpu_seconds']:.1f} s CPU; "
                   f"{r['ratio_to_random'] or 1.0:.1f}x random) | {phases}"
                   + (f" | tokenise alone {r['tokenise_seconds']['wall']:.1f} s" if "tokenise_seconds" in r else "")
                   + f" | load {os.getloadavg()[0]:.2f}")
    at_target = [r for r in results if r["n"] >= 10_000 and r["method"] in ("kcenter", "gradmatch")]
    summary = {r["method"]: {"seconds": r["seconds"], "met": r["seconds"] <= TARGET_S} for r in at_target}
    print("target (<= 300 s at 10,000 rows): " + (json.dumps(summary) if summary else "no 10,000-row run"))
    out = ROOT / "bench" / "results" / f"condense_speed-{args.tag}"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"args": vars(args), "cpu_affinity": sorted(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "bf16_forward": scoring.forward_dtype(torch.device("cpu")) is not None, "machine": platform.processor()
            or platform.machine(), "loadavg_end": os.getloadavg(), "torch": torch.__version__}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "target_seconds": TARGET_S, "target": summary,
                                                    "results": results}, indent=1))
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out}.json / .png")


if __name__ == "__main__":
    main()
