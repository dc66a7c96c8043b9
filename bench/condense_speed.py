"""Condensation speed at 10,000+ records, end to end (embeddings / gradients included).

    flock /tmp/stillhouse-heavy.lock python bench/condense_speed.py --methods random,kcenter,gradmatch

Input: CQA train (9,741, `../shared/data/distill_step_by_step/cqa`) + the first GSM8K train
questions up to --n rows (default 10,000), label = answer letter (CQA) or "gsm8k", group =
source. Each method condenses to --ratio; the baseline is `random` in the same run (quotas and
de-duplication included, no embedding work beyond LSA for the report). Target: k-center or
gradient matching on 10,000 rows in <= 300 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.condense import rows_for
from tasks import condense as cz
from tasks.condensation import scoring
from tasks.params import Condense

GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"


class CqaDomain:
    """The two things gradmatch reads from a domain: the question and the canonical label."""

    name = "cqa"
    labels = None

    @staticmethod
    def question(row: dict) -> str:
        return f"Q: {row['text']}\nA:"

    @staticmethod
    def normalize_label(label: str) -> str:
        return label


def load(n: int) -> list[dict]:
    rows = [dict(r, groups={"source": "cqa"}) for r in rows_for("train")]
    with GSM8K.open() as f:
        for i, line in enumerate(f):
            if len(rows) >= n:
                break
            g = json.loads(line)
            rows.append({"id": f"gsm8k-{i:05d}", "text": g["question"], "label": "gsm8k", "groups": {"source": "gsm8k"},
                         "rationale": g["answer"].split("####")[0].strip(), "kept": True})
    return rows[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--ratio", type=float, default=0.1)
    ap.add_argument("--methods", default="random,kcenter,gradmatch")
    ap.add_argument("--embedding", default="lsa")
    ap.add_argument("--scorer-layers", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (see bench/condense.py)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows = load(args.n)
    print(f"{len(rows)} rows", flush=True)
    results = {}
    for method in args.methods.split(","):
        p = Condense(method=method, ratio=args.ratio, embedding=args.embedding, scorer_layers=args.scorer_layers,
                     scorer_max_length=args.max_length)
        t0 = time.perf_counter()
        scorer = scoring.load_scorer(p.scorer, p.scorer_layers) if method in ("ifd", "gradmatch") else None
        load_s = time.perf_counter() - t0
        kept, rep = cz.run(rows, ("source",), p, domain=CqaDomain(), scorer=scorer)
        total = time.perf_counter() - t0
        results[method] = total
        print(f"{method:>12} ({args.embedding}): {len(rows)} -> {len(kept)} in {total:.1f} s end to end "
              f"(model load {load_s:.1f} s, embedding {rep['embedding']['seconds']} s, scores {rep['scores']}); "
              f"dropped {rep['ledger']['dropped']}; cover radius {rep['diversity']['cover_radius']:.3f}", flush=True)
    base = results.get("random")
    if base:
        print("ratio to random: " + ", ".join(f"{m} {t / base:.1f}x" for m, t in results.items()))


if __name__ == "__main__":
    main()
