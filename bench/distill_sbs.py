"""Distilling step-by-step on CommonsenseQA: label-only vs label + PaLM rationale, equal steps.

    python bench/distill_sbs.py                          # acceptance size: 2 seeds x 2 arms, 1,221 questions
    python bench/distill_sbs.py --steps 40 --seeds 0 --n-test 200    # a quick look

Data: `../shared/data/distill_step_by_step/cqa` (Hsieh et al., 2023, arXiv:2305.02301): 9,741
train and 1,221 test questions with five choices; PaLM-540B chain-of-thought completions parsed
by `tasks.teachers.replay.load_step_by_step`. As in the paper, a rationale is kept only when
PaLM's answer matches the gold one, and the rationale task's target is the text before
"So the answer is" (the answer itself stays the label task's job).

Arms, both through `tasks.distill.train` (the stage's loop: cross-entropy, kd_weight 0, as the
teacher is PaLM text, not logits), same seed, same steps, same schedule:
  label      every step 8 label examples   "[label] <question + choices>" -> "Answer: (c) wooded area"
  label+rat  4 label + 4 rationale examples, L = (1 - a) L_label + a L_rationale, a = rationale_weight
Student: `--student` (default full: SmolLM2-135M-Instruct, all 30 blocks; `--keep-first 8
--keep-last 8` for the layer-dropped one). Accuracy on the test split: one forward pass per
question (batched), the answer letter scored after "Answer: (": argmax of the log-probs of the
five letter tokens (no generation). Several seeds; the difference comes with a paired
bootstrap 95% CI over questions (seeds pooled). Writes bench/results/distill_sbs.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
from pathlib import Path

import numpy as np
import torch

from tasks import distill as ds
from tasks import models
from tasks import student as st
from tasks.params import Distill, load_params
from tasks.teachers.replay import load_step_by_step

ROOT = Path(__file__).resolve().parents[1]
SBS = ROOT.parent / "shared" / "data" / "distill_step_by_step"
RESULTS = ROOT / "bench" / "results"
LETTERS = "abcde"


def rationale_text(output: str) -> str:
    """PaLM's reasoning without its closing "So the answer is (x) ..." (the paper's rationale)."""
    return re.split(r"\s*[Ss]o the answer is", output, maxsplit=1)[0].strip()


def label_target(row: dict) -> str:
    i = row["choices"].index(row["label"])
    return f"{ds.ANSWER} ({LETTERS[i]}) {row['label']}"


def example(tok, row: dict, task: str, max_length: int) -> ds.Example:
    prompt = models.chat_prompt(tok, ds.TAGS[task] + row["text"])
    target = label_target(row) if task == ds.LABEL else rationale_text(row["output"])
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    t = tok(target, add_special_tokens=False)["input_ids"][: max_length - len(p) - 1] + [tok.eos_token_id]
    return ds.Example(task, row["id"], p, t)


@torch.no_grad()
def accuracy(model, tok, rows: list[dict], batch_size: int = 32) -> np.ndarray:
    """Per question 1/0: is the gold letter the most likely of the five after "Answer: ("?"""
    letter_ids = [tok(f"{ds.ANSWER} ({c}", add_special_tokens=False)["input_ids"][-1] for c in LETTERS]
    assert len(set(letter_ids)) == 5, letter_ids
    prefix = tok(f"{ds.ANSWER} (", add_special_tokens=False)["input_ids"]
    model.eval()
    correct = np.zeros(len(rows), dtype=np.int8)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["text"]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        seqs = [tok(models.chat_prompt(tok, ds.TAGS[ds.LABEL] + rows[i]["text"]), add_special_tokens=False)["input_ids"]
                + prefix for i in idx]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        for b, s in enumerate(seqs):  # right padding: the scored position is each row's last token
            ids[b, : len(s)], mask[b, : len(s)] = torch.tensor(s), 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = model.base_model(input_ids=ids, attention_mask=mask)[0]
        last = hidden[torch.arange(len(seqs)), mask.sum(1) - 1].float()  # (B, H)
        head = model.get_output_embeddings().weight.float()[letter_ids]  # (5, H): only the letters
        pick = (last @ head.T).argmax(-1)
        for b, i in enumerate(idx):
            correct[i] = int(LETTERS[int(pick[b])] == LETTERS[rows[i]["choices"].index(rows[i]["label"])])
    return correct


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% CI of mean(b - a) over questions (rows of a and b are paired)."""
    rng = np.random.default_rng(seed)
    diff = (b.astype(float) - a.astype(float)).ravel()
    idx = rng.integers(0, len(diff), (n, len(diff)))
    means = diff[idx].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--rationale-weight", type=float, default=0.5)
    ap.add_argument("--keep-first", type=int, default=15, help="15 + 15 = all 30 blocks (full student)")
    ap.add_argument("--keep-last", type=int, default=15)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--n-train", type=int, default=0, help="0: all 9,741 questions")
    ap.add_argument("--n-test", type=int, default=0, help="0: all 1,221 questions")
    ap.add_argument("--no-init-eval", action="store_true", help="skip scoring the untrained student")
    ap.add_argument("--out", default=str(RESULTS / "distill_sbs"))
    args = ap.parse_args()

    train_rows = load_step_by_step(SBS, "cqa", "train")
    test_rows = load_step_by_step(SBS, "cqa", "test")
    if args.n_train:
        train_rows = random.Random(0).sample(train_rows, args.n_train)
    if args.n_test:
        test_rows = test_rows[: args.n_test]
    path = models.resolve_model(load_params(ROOT / "params.yaml").synthesize.teacher)
    tok = models.load_tokenizer(path)
    labels = [example(tok, r, ds.LABEL, args.max_length) for r in train_rows]
    kept = [r for r in train_rows if r["match"] and rationale_text(r["output"])]
    rationales = [example(tok, r, ds.RATIONALE, args.max_length) for r in kept]
    base = models.load_causal_lm(path, "float32", "cpu")
    load0 = os.getloadavg()[0]
    print(f"cqa: {len(labels)} train questions, {len(rationales)} PaLM rationales kept (answer = gold), "
          f"{len(test_rows)} test; torch threads {torch.get_num_threads()}, load avg {load0:.1f}")

    probe = Distill(keep_first=args.keep_first, keep_last=args.keep_last)
    init_acc = None if args.no_init_eval else float(accuracy(st.init_student(base, probe), tok, test_rows).mean())
    print(f"student: {len(st.select_layers(base.config.num_hidden_layers, probe))} blocks; accuracy at init {init_acc}")
    result = {"args": vars(args), "n_rationales": len(rationales), "n_test": len(test_rows),
              "init_accuracy": init_acc, "load_avg_start": load0, "runs": []}
    per_arm: dict[str, list[np.ndarray]] = {"label": [], "label+rat": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm in per_arm:
            params = Distill(keep_first=args.keep_first, keep_last=args.keep_last, steps=args.steps,
                             batch_size=args.batch_size, max_length=args.max_length, lr=args.lr,
                             kd_weight=0.0, ce_weight=1.0, rationale_weight=args.rationale_weight, seed=seed)
            pools = {ds.LABEL: labels, ds.RATIONALE: rationales if arm == "label+rat" else []}
            student = st.init_student(base, params)
            start = time.perf_counter()
            history = ds.train(student, base, pools, params, tok.pad_token_id)
            seconds = time.perf_counter() - start
            acc = accuracy(student, tok, test_rows)
            per_arm[arm].append(acc)
            result["runs"].append({"seed": seed, "arm": arm, "accuracy": float(acc.mean()), "train_seconds": seconds,
                                   "label_loss": [h["label_loss"] for h in history]})
            print(f"seed {seed} {arm:>9}: accuracy {acc.mean():.4f}  ({seconds / args.steps:.2f} s/step, "
                  f"load {os.getloadavg()[0]:.1f})")
            del student

    a, b = np.stack(per_arm["label"]), np.stack(per_arm["label+rat"])
    diff = float(b.mean() - a.mean())
    lo, hi = paired_bootstrap(a, b)
    result.update(label_accuracy=float(a.mean()), rationale_accuracy=float(b.mean()), difference=diff,
                  ci95=[lo, hi], per_seed_difference=[float(y.mean() - x.mean()) for x, y in zip(a, b)],
                  load_avg_end=os.getloadavg()[0])
    print(f"label-only {100 * a.mean():.2f}%  label+rationale {100 * b.mean():.2f}%  difference "
          f"{100 * diff:+.2f} points, paired bootstrap 95% CI [{100 * lo:+.2f}, {100 * hi:+.2f}] "
          f"(target >= +2); per seed {[round(100 * d, 2) for d in result['per_seed_difference']]}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for r in result["runs"]:
        a.plot(range(1, len(r["label_loss"]) + 1), r["label_loss"], label=f"{r['arm']} seed {r['seed']}", alpha=0.7)
    a.set(xlabel="step", ylabel="label-task CE", title="training")
    a.legend()
    arms = ["label", "label+rat"]
    for j, arm in enumerate(arms):
        accs = [100 * r["accuracy"] for r in result["runs"] if r["arm"] == arm]
        b.scatter([j] * len(accs), accs, color=f"C{j}")
        b.bar(j, np.mean(accs), alpha=0.4, color=f"C{j}")
    if result["init_accuracy"] is not None:
        b.axhline(100 * result["init_accuracy"], color="grey", ls="--", label="student at init")
    b.axhline(20, color="lightgrey", ls=":", label="chance")
    b.set_xticks(range(2), arms)
    b.set(ylabel="CQA test accuracy (%)", title=f"diff {100 * result['difference']:+.2f} pts, 95% CI "
          f"[{100 * result['ci95'][0]:+.1f}, {100 * result['ci95'][1]:+.1f}]")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
