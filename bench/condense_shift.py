"""Does a condensed subset's distance from the test questions explain its accuracy? CQA, 10%.

    python bench/condense_shift.py --results bench/results/condense-cqa-400steps-top6-10pct-ccs.json

Rebuilds each listed arm's 10% subset exactly as bench/condense.py does (tasks.condense.run,
same params and seeds; scorer-free methods only) and measures its squared MMD to the 1,221 test
questions (Gretton et al. 2012; RBF kernel on LSA embeddings of train + test, bandwidth by the
median heuristic). Then sets it beside the accuracy each arm reached in the --results runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import cqa  # noqa: E402
from bench.condense import arm_params  # noqa: E402
from tasks import condense as cz  # noqa: E402


def params_of(name: str):
    """'random 10% s2' / 'ccs/s1 10%' / 'kcenter 10%' -> the Condense params bench/condense.py used."""
    method, pct, *draw = name.split(" ")
    return arm_params(method, float(pct.rstrip("%")) / 100, draw=int(draw[0][1:]) if draw else 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", required=True, help="bench/condense.py .json files (comma-separated): the accuracies")
    ap.add_argument("--arms", default="random 10% s0,random 10% s1,random 10% s2,random 10% s3,prototype 10%,"
                                      "ccs 10%,ccs/s1 10%,kcenter 10%")
    args = ap.parse_args()
    accuracy = {n: a["accuracy"] for f in args.results.split(",") for n, a in json.loads(Path(f).read_text())["arms"].items()}
    train, test = cqa.load_rows("train"), cqa.load_rows("test")
    x = cz.embed_texts([r["text"] for r in train + test], "lsa", 0)
    x_train, x_test = x[: len(train)], x[len(train):]
    sq = ((x_test[:500, None] - x_test[None, :500]) ** 2).sum(-1)
    gamma = 1.0 / np.median(sq[sq > 0])

    def kernel_mean(a: np.ndarray, b: np.ndarray) -> float:
        d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
        return float(np.exp(-gamma * d).mean())

    test_term = kernel_mean(x_test, x_test)
    index = {r["id"]: i for i, r in enumerate(train)}
    rows = []
    for name in ["full"] + args.arms.split(","):
        kept = train if name == "full" else cz.run(train, ("qtype",), params_of(name), domain=cqa.CqaDomain())[0]
        s = x_train[[index[r["id"]] for r in kept]]
        mmd2 = kernel_mean(s, s) + test_term - 2 * kernel_mean(s, x_test)
        rows.append((name, mmd2, accuracy.get(name, float("nan"))))
        print(f"{name:>16}: MMD^2 to test {mmd2:.5f}  accuracy {rows[-1][2]:.4f}", flush=True)
    m, a = np.array([r[1:] for r in rows[1:]]).T
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    print(f"over the {len(m)} subsets: Spearman {np.corrcoef(rank(m), rank(a))[0, 1]:+.2f}, Pearson {np.corrcoef(m, a)[0, 1]:+.2f}")


if __name__ == "__main__":
    main()
