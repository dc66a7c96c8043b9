"""Does a condensed r% train the student as well as all the data? CQA, one run, all arms.

    flock /tmp/stillhouse-heavy.lock python bench/condense.py            # ~30 min on 2 CPU cores

Data: CommonsenseQA as in distilling step-by-step (`../shared/data/distill_step_by_step/cqa`):
9,741 train questions with PaLM-540B rationales (kept when PaLM's answer is right), all 1,221
test questions. Rows get label = the answer letter (a-e) and one group, `qtype` (the question's
wh-word), so the quotas have a label and a group partition to keep.

Student: SmolLM2-135M-Instruct (params.yaml synthesize.teacher) with only its first and last
`--layers`/2 blocks (tasks.distill.init_student), trained by tasks.distill.train for `--steps`
steps of `--batch` on two tasks, CE only (kd_weight 0: a 30-block teacher forward per step is
beyond this budget): "[label] Q: ... A:" -> " (c)" and "[rationale] Q: ... A:" -> the PaLM
rationale (first `--rationale-tokens` tokens). Every arm trains the same fresh student, same
steps, same seed; only the rows differ.

Metric: accuracy on all 1,221 test questions, scoring the five letters after " (" in one forward
pass each (no generation), and the gold letter's NLL over the full vocabulary (lower noise).
Gain = metric(after) - metric(untrained student); "retained" = gain(arm) / gain(full). 95%
intervals from a paired bootstrap over test questions (the same resamples for every arm).

Arms: full; for r in --ratios: condensed (--method, with quotas and de-duplication) and random
(quotas, seeded order). Prints one table and writes --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks import condense as cz
from tasks import models
from tasks.distill import (
    LABEL,
    RATIONALE,
    Example,
    heldout_loss,
    init_student,
    kept_layers,
    train,
)
from tasks.params import Condense, Distill, load_params
from tasks.teachers.replay import load_step_by_step

DATA = ROOT.parent / "shared" / "data" / "distill_step_by_step"
LETTERS = "abcde"
WH = ("what", "where", "why", "how", "who", "when", "which")


def qtype(question: str) -> str:
    words = re.findall(r"[a-z]+", question.lower())
    return next((w for w in words if w in WH), "other")


def rows_for(split: str) -> list[dict]:
    """CQA rows in the synthesize schema: letter label, qtype group, kept PaLM rationale."""
    out = []
    for r in load_step_by_step(DATA, "cqa", split):
        letter = LETTERS[r["choices"].index(r["label"])]
        rationale = r["output"].split("So the answer is")[0].strip() if r["match"] else None
        out.append({"id": r["id"], "text": r["text"], "label": letter, "groups": {"qtype": qtype(r["text"])},
                    "rationale": rationale or None, "kept": bool(rationale), "teacher_answer": r["answer"],
                    "correct": r["match"]})
    return out


def prompt_ids(tok, row: dict, task: str) -> list[int]:
    tag = "[label] " if task == LABEL else "[rationale] "
    return tok(f"{tag}Q: {row['text']}\nA:", add_special_tokens=False)["input_ids"]


def examples(tok, rows: list[dict], rationale_tokens: int) -> dict[str, list[Example]]:
    pools = {LABEL: [], RATIONALE: []}
    for r in rows:
        pools[LABEL].append(Example(LABEL, r["id"], prompt_ids(tok, r, LABEL),
                                    tok(f" ({r['label']})", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]))
        if r.get("rationale"):
            target = tok(" " + r["rationale"], add_special_tokens=False)["input_ids"][:rationale_tokens]
            pools[RATIONALE].append(Example(RATIONALE, r["id"], prompt_ids(tok, r, RATIONALE), target + [tok.eos_token_id]))
    return pools


@torch.no_grad()
def score(model, tok, rows: list[dict], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(correct `(n,)` bool, gold-letter NLL `(n,)`): one forward per question, letters after " (".""" 
    open_paren = tok(" (", add_special_tokens=False)["input_ids"]
    letter_ids = [tok(c, add_special_tokens=False)["input_ids"][0] for c in LETTERS]
    seqs = [prompt_ids(tok, r, LABEL) + open_paren for r in rows]
    gold = np.array([LETTERS.index(r["label"]) for r in rows])
    correct, nll = np.zeros(len(rows), bool), np.zeros(len(rows))
    order = sorted(range(len(rows)), key=lambda i: len(seqs[i]))
    w = model.get_output_embeddings().weight
    model.eval()
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        width = max(len(seqs[i]) for i in idx)
        ids = torch.full((len(idx), width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        for b, i in enumerate(idx):  # left padding: the last position is every row's next token
            ids[b, width - len(seqs[i]) :] = torch.tensor(seqs[i])
            mask[b, width - len(seqs[i]) :] = 1
        h = model.base_model(input_ids=ids, attention_mask=mask)[0][:, -1].float()  # (B, H)
        logp = torch.log_softmax(h @ w.float().T, -1)  # (B, V)
        pick = logp[:, letter_ids].argmax(-1).numpy()
        for b, i in enumerate(idx):
            correct[i] = pick[b] == gold[i]
            nll[i] = -float(logp[b, letter_ids[gold[i]]])
    return correct, nll


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default="kcenter")
    ap.add_argument("--ratios", default="0.05,0.1,0.2")
    ap.add_argument("--layers", type=int, default=2, help="student blocks: first and last half of SmolLM2's 30")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--rationale-weight", type=float, default=0.5)
    ap.add_argument("--rationale-tokens", type=int, default=32)
    ap.add_argument("--test", type=int, default=0, help="first N test questions (0: all 1,221)")
    ap.add_argument("--random-seeds", default="0", help="seeds of the random arms, e.g. 0,1")
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--heldout", type=int, default=200, help="test rationales for the held-out rationale loss")
    ap.add_argument("--out", default="bench/results/condense-cqa.json")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 because on 2 shared cores OpenMP's spinning threads lose 5x+ when others run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.perf_counter()
    train_rows, test_rows = rows_for("train"), rows_for("test")
    if args.test:
        test_rows = test_rows[: args.test]
    spec = load_params(ROOT / "params.yaml").synthesize.teacher
    path = models.resolve_model(spec)
    tok = models.load_tokenizer(path)
    teacher = models.load_causal_lm(path, "float32", "cpu")  # only the student's source (kd_weight 0)
    keep = kept_layers(teacher.config.num_hidden_layers, (args.layers + 1) // 2, args.layers // 2)
    distill = Distill(keep_first=(args.layers + 1) // 2, keep_last=args.layers // 2, steps=args.steps,
                      batch_size=args.batch, max_length=256, lr=args.lr, kd_weight=0.0, ce_weight=1.0,
                      rationale_weight=args.rationale_weight, seed=0)
    test_pools = examples(tok, test_rows, args.rationale_tokens)
    print(f"train {len(train_rows)} ({sum(bool(r['rationale']) for r in train_rows)} with a PaLM rationale), "
          f"test {len(test_rows)}; student blocks {keep}; {args.steps} steps x {args.batch}", flush=True)

    arms: dict[str, dict] = {}

    def evaluate(name: str, model, extra: dict) -> None:
        t0 = time.perf_counter()
        correct, nll = score(model, tok, test_rows)
        loss = heldout_loss(model, {LABEL: [], RATIONALE: test_pools[RATIONALE][: args.heldout]}, tok.pad_token_id)
        arms[name] = {**extra, "correct": correct, "nll": nll, "accuracy": float(correct.mean()),
                      "letter_nll": float(nll.mean()), "rationale_loss": loss["rationale_loss"],
                      "eval_seconds": round(time.perf_counter() - t0, 1)}
        print(f"{name:>16}: accuracy {correct.mean():.4f}  letter NLL {nll.mean():.3f}  rationale loss "
              f"{loss['rationale_loss']:.3f}  {extra}", flush=True)

    evaluate("untrained", init_student(teacher, keep), {"n": 0})

    def arm(name: str, rows: list[dict], extra: dict) -> None:
        student = init_student(teacher, keep)
        t0 = time.perf_counter()
        train(student, teacher, examples(tok, rows, args.rationale_tokens), distill, tok.pad_token_id)
        evaluate(name, student, {**extra, "n": len(rows), "train_seconds": round(time.perf_counter() - t0, 1)})

    arm("full", train_rows, {})  # first: the arms below are read against it
    for ratio in sorted([float(r) for r in args.ratios.split(",")], key=lambda r: abs(r - 0.1)):  # 10% first
        kept, rep = cz.run(train_rows, ("qtype",), Condense(method=args.method, ratio=ratio, seed=0))
        arm(f"{args.method} {ratio:.0%}", kept, {"condense_seconds": rep["seconds"], "dropped": rep["ledger"]["dropped"],
                                                 "cover_radius": rep["diversity"]["cover_radius"]})
        for seed in [int(s) for s in args.random_seeds.split(",")]:
            kept, rep = cz.run(train_rows, ("qtype",), Condense(method="random", ratio=ratio, seed=seed, dedup="none"))
            arm(f"random {ratio:.0%} s{seed}", kept, {"cover_radius": rep["diversity"]["cover_radius"]})
        table(args, arms, test_rows, started)  # after each ratio: a partial table survives a cut-off run


def table(args, arms: dict, test_rows: list[dict], started: float) -> None:
    """Print the table of the arms measured so far and write it with the numbers to --out."""

    # Paired bootstrap over test questions: the same resample for every arm.
    rng = np.random.default_rng(0)
    boots = rng.integers(0, len(test_rows), size=(args.boot, len(test_rows)))
    base, full = arms["untrained"], arms["full"]
    lines = [("| arm | rows | accuracy (95% CI) | gain | retained of full gain (95% CI) | letter NLL | rationale loss "
              "| rationale-loss gain retained | train s |"), "|---|---|---|---|---|---|---|---|---|"]
    for name, a in arms.items():
        acc_b = a["correct"][boots].mean(1)
        gain_b = acc_b - base["correct"][boots].mean(1)
        full_b = full["correct"][boots].mean(1) - base["correct"][boots].mean(1)
        gain = a["accuracy"] - base["accuracy"]
        full_gain = full["accuracy"] - base["accuracy"]
        ret = gain / full_gain if full_gain else float("nan")
        ret_b = gain_b / np.where(full_b == 0, np.nan, full_b)
        nll_ret = (base["rationale_loss"] - a["rationale_loss"]) / (base["rationale_loss"] - full["rationale_loss"])
        a.update(gain=gain, retained=ret, retained_ci=[float(np.nanpercentile(ret_b, 2.5)), float(np.nanpercentile(ret_b, 97.5))],
                 accuracy_ci=[float(np.percentile(acc_b, 2.5)), float(np.percentile(acc_b, 97.5))], rationale_loss_retained=nll_ret)
        lines.append(f"| {name} | {a['n']} | {a['accuracy']:.4f} ({a['accuracy_ci'][0]:.3f}-{a['accuracy_ci'][1]:.3f}) | "
                     f"{gain:+.4f} | {ret:.2f} ({a['retained_ci'][0]:.2f} to {a['retained_ci'][1]:.2f}) | "
                     f"{a['letter_nll']:.3f} | {a['rationale_loss']:.3f} | {nll_ret:.2f} | {a.get('train_seconds', '')} |")
    for ratio in [float(r) for r in args.ratios.split(",")]:
        c = arms.get(f"{args.method} {ratio:.0%}")
        for seed in [int(s) for s in args.random_seeds.split(",")]:
            r = arms.get(f"random {ratio:.0%} s{seed}")
            if c is None or r is None:
                continue
            diff = (c["correct"][boots].mean(1) - r["correct"][boots].mean(1))
            lines.append(f"\n{args.method} {ratio:.0%} minus random s{seed}: accuracy {c['accuracy'] - r['accuracy']:+.4f} "
                         f"(95% CI {np.percentile(diff, 2.5):+.4f} to {np.percentile(diff, 97.5):+.4f})")
    uptime = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    lines.append(f"\nelapsed {time.perf_counter() - started:.0f} s; load average (1/5/15 min) {' '.join(uptime)}")
    print("\n".join(lines), flush=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "table": lines, "seconds": round(time.perf_counter() - started, 1),
                                          "arms": {k: {kk: vv for kk, vv in v.items() if kk not in ("correct", "nll")}
                                                   for k, v in arms.items()}}, indent=1, default=str))


if __name__ == "__main__":
    main()
