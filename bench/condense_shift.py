"""Does a condensed subset's distance from the test questions explain its accuracy? CQA, 10%.

    python bench/condense_shift.py --results bench/results/condense-cqa-400steps-top6-10pct-ccs.json

Rebuilds each listed arm's 10% subset exactly as bench/condense.py does (tasks.condense.run,
same params and seeds; scorer-free methods only) and measures two shifts from the 1,221 test
questions, beside the accuracy each arm reached in the --results runs:
- questions: squared MMD to the test questions (Gretton et al. 2012; RBF kernel on LSA
  embeddings of train + test, bandwidth by the median heuristic);
- answers: the share of test questions whose gold answer is the gold answer of some subset row
  ("gold seen"), and whose wrong choices include one ("distractor seen"). With the arms'
  per-question results (`correct_bits`), a two-way fixed-effects regression (test question x
  arm, both demeaned out) of correct on the two: how much seeing a question's answer as a gold
  answer in training moves that question, the same question compared across subsets.
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
    method = method.partition("/t")[0]  # "random+first/t1": the subset of random+first (another training seed)
    return arm_params(method, float(pct.rstrip("%")) / 100, draw=int(draw[0][1:]) if draw else 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", required=True, help="bench/condense.py .json files (comma-separated): the accuracies")
    ap.add_argument("--arms", default="random 10% s0,random 10% s1,random 10% s2,random 10% s3,prototype 10%,"
                                      "ccs 10%,ccs/s1 10%,kcenter 10%")
    args = ap.parse_args()
    arms = {n: a for f in args.results.split(",") for n, a in json.loads(Path(f).read_text())["arms"].items()}
    accuracy = {n: a["accuracy"] for n, a in arms.items()}
    bits = {n: cqa.unbits(a["correct_bits"]) for n, a in arms.items() if "correct_bits" in a}
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
    gold = [norm(t["answer"]) for t in test]
    wrong = [{norm(c) for j, c in enumerate(t["choices"]) if j != t["gold"]} for t in test]
    rows, seen = [], {}  # seen[name] = (gold seen, distractor seen) per test question
    for name in ["full"] + args.arms.split(","):
        kept = train if name == "full" else cz.run(train, ("qtype",), params_of(name), domain=cqa.CqaDomain())[0]
        s = x_train[[index[r["id"]] for r in kept]]
        mmd2 = kernel_mean(s, s) + test_term - 2 * kernel_mean(s, x_test)
        answers = {norm(r["answer"]) for r in kept}
        seen[name] = (np.array([g in answers for g in gold]), np.array([bool(w & answers) for w in wrong]))
        rows.append((name, mmd2, accuracy.get(name, float("nan"))))
        print(f"{name:>28}: MMD^2 to test {mmd2:.5f}  gold seen {seen[name][0].mean():.3f}  distractor seen "
              f"{seen[name][1].mean():.3f}  distinct answers {len(answers):5d}  accuracy {rows[-1][2]:.4f}", flush=True)
    m, a = np.array([r[1:] for r in rows[1:]]).T
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    print(f"over the {len(m)} subsets: Spearman {np.corrcoef(rank(m), rank(a))[0, 1]:+.2f}, Pearson {np.corrcoef(m, a)[0, 1]:+.2f}")
    measured = [n for n in seen if n in bits and n != "full"]  # subsets with per-question results
    if len(measured) >= 3:
        b, se = answer_effects(np.array([bits[n] for n in measured], float), np.array([seen[n][0] for n in measured], float),
                               np.array([seen[n][1] for n in measured], float))
        print(f"two-way fixed effects over {len(measured)} subsets x {len(test)} questions: gold seen {100 * b[0]:+.1f} points "
              f"(bootstrap SE {100 * se[0]:.1f}), distractor seen {100 * b[1]:+.1f} (SE {100 * se[1]:.1f})")


def norm(answer: str) -> str:
    return answer.strip().lower()


def answer_effects(correct: np.ndarray, gold_seen: np.ndarray, wrong_seen: np.ndarray, boot: int = 200):
    """OLS of correct on (gold seen, distractor seen), all `(arms, questions)`, with question and
    arm means removed (two-way fixed effects); coefficients and their SE over resampled questions."""
    def fit(q):
        dm = lambda m: m - m.mean(0, keepdims=True) - m.mean(1, keepdims=True) + m.mean()  # noqa: E731
        x = np.stack([dm(gold_seen[:, q]).ravel(), dm(wrong_seen[:, q]).ravel()], 1)
        return np.linalg.lstsq(x, dm(correct[:, q]).ravel(), rcond=None)[0]
    rng = np.random.default_rng(0)
    n = correct.shape[1]
    return fit(np.arange(n)), np.std([fit(rng.integers(0, n, n)) for _ in range(boot)], axis=0)


if __name__ == "__main__":
    main()
