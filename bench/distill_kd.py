"""KD vs CE-only at equal steps: held-out perplexity of a layer-dropped student on PubMedQA text.

    python bench/distill_kd.py                                   # acceptance size: 150 steps x 3 arms
    python bench/distill_kd.py --steps 40 --arms ce,kd --eval-chunks 16   # a quick look
    python bench/distill_kd.py --layers perplexity --train-pmids 100 --eval-every 20   # see bench/README.md

Teacher: `synthesize.teacher` (SmolLM2-135M-Instruct, 30 blocks). Student: its first and last
blocks (`--keep-first/--keep-last`, tasks/student.py) or the blocks `--layers` names or prunes to,
a fresh copy per arm, same seed, same batches (distill.train draws them from the same seeded
shuffle), same steps, same schedule.
Text: PubMedQA (`../shared/data/pubmedqa/ori_pqal.json`), each PMID's CONTEXTS then LONG_ANSWER,
packed into `--seq-len`-token chunks, every token a target. Train on the PMIDs outside
`test_ground_truth.json` (`--train-pmids N`: only the first N of them, a small domain corpus seen
for several epochs); held-out perplexity on chunks of the 500 test PMIDs (`--eval-every`: also
during training, for the curve and for CE's best step, never to pick weights).

Arms (all through `tasks.distill.train`, the stage's loop):
  ce       kd_weight 0, ce_weight 1: fine-tuning on the gold next tokens (the baseline)
  kd       kd_weight 1, ce_weight 0: forward KL to the teacher at `--temperature`
  kd+ce    0.5 / 0.5 (the stage's default weights)
  kd+hid   kd plus FitNets hidden-state alignment (cosine, weight 1) between the student's state
           after its first `--keep-first` blocks and the teacher's where its kept last blocks start
Prints teacher, student-at-init and per-arm perplexity, the KD/CE ratio and the student's
distance to the teacher; writes bench/results/distill_kd.json and .png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
from pathlib import Path

import torch

from tasks import distill as ds
from tasks import models
from tasks import student as st
from tasks.params import Distill, Student, load_params

ROOT = Path(__file__).resolve().parents[1]
PUBMEDQA = ROOT.parent / "shared" / "data" / "pubmedqa"
RESULTS = ROOT / "bench" / "results"
# (kd_weight, ce_weight, hidden_weight): "+hid" also aligns the student's hidden state at the
# junction of kept blocks with the teacher's at the same depth (FitNets; cosine distance).
ARMS = {"ce": (0.0, 1.0, 0.0), "kd": (1.0, 0.0, 0.0), "kd+ce": (0.5, 0.5, 0.0), "kd+hid": (1.0, 0.0, 1.0)}


def pubmedqa_texts(folder: Path) -> tuple[list[str], list[str]]:
    """(train texts, held-out texts): contexts then long answer per PMID; held out = the test PMIDs."""
    data = json.loads((folder / "ori_pqal.json").read_text())
    test = set(json.loads((folder / "test_ground_truth.json").read_text()))
    text = {pmid: " ".join(r["CONTEXTS"]) + " " + r["LONG_ANSWER"] for pmid, r in sorted(data.items())}
    return [t for p, t in text.items() if p not in test], [t for p, t in text.items() if p in test]


def chunks(tok, texts: list[str], seq_len: int, name: str) -> list[ds.Example]:
    """Texts joined by EOS and cut into `seq_len`-token examples; every token after the first is a target."""
    stream: list[int] = []
    for t in texts:
        stream += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = len(stream) // seq_len
    return [ds.Example(ds.LABEL, f"{name}-{i}", stream[i * seq_len : i * seq_len + 1],
                       stream[i * seq_len + 1 : (i + 1) * seq_len]) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--keep-first", type=int, default=8)
    ap.add_argument("--keep-last", type=int, default=8)
    ap.add_argument("--layers", default="",
                    help="comma-separated teacher blocks the student keeps (instead of --keep-first/--keep-last), "
                         "or 'perplexity': keep-first + keep-last blocks pruned on 6 training chunks")
    ap.add_argument("--arms", default="ce,kd,kd+ce")
    ap.add_argument("--eval-chunks", type=int, default=48, help="held-out chunks (x seq-len tokens)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=0,
                    help="> 0: held-out perplexity every N steps too (a curve; reported, never used to pick weights)")
    ap.add_argument("--train-pmids", type=int, default=0,
                    help="> 0: train on only the first N training PMIDs (a small domain corpus, several epochs)")
    ap.add_argument("--out", default=str(RESULTS / "distill_kd"))
    args = ap.parse_args()

    if args.layers and any(ARMS[a][2] for a in args.arms.split(",")):
        raise SystemExit("kd+hid aligns the first/last junction: use --keep-first/--keep-last, not --layers")
    path = models.resolve_model(load_params(ROOT / "params.yaml").synthesize.teacher)
    tok = models.load_tokenizer(path)
    train_texts, test_texts = pubmedqa_texts(PUBMEDQA)
    train = {ds.LABEL: chunks(tok, train_texts[: args.train_pmids or None], args.seq_len, "train"), ds.RATIONALE: []}
    held = {ds.LABEL: chunks(tok, test_texts, args.seq_len, "test")[: args.eval_chunks], ds.RATIONALE: []}
    teacher32 = models.load_causal_lm(path, "float32", "cpu")
    teacher = models.load_causal_lm(path, "auto", "cpu")  # what the stage trains against
    n_layers = teacher.config.num_hidden_layers
    if args.layers == "perplexity":  # ~25 min on one core for 30 -> 16 blocks
        every = chunks(tok, train_texts, args.seq_len, "train") if args.train_pmids else train[ds.LABEL]
        calibration = every[::37][:6]  # spread over all the training PMIDs, whatever --train-pmids
        ids = torch.tensor([c.prompt_ids + c.target_ids for c in calibration])
        keep = st.perplexity_layers(teacher32, {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                                    args.keep_first + args.keep_last)
        args.layers = ",".join(map(str, keep))
        print(f"pruned on calibration perplexity: --layers {args.layers}")
    load0 = os.getloadavg()[0]
    epochs = args.steps * args.batch_size / len(train[ds.LABEL])
    print(f"teacher {path} ({n_layers} blocks); {len(train[ds.LABEL])} train chunks ({epochs:.1f} epochs) / "
          f"{len(held[ds.LABEL])} held-out chunks of {args.seq_len} tokens; torch threads "
          f"{torch.get_num_threads()}, load avg {load0:.1f}")

    t_eval = ds.heldout_loss(teacher, held, tok.pad_token_id)
    result = {"args": vars(args), "teacher_ppl": t_eval["ppl"], "teacher_layers": n_layers,
              "load_avg_start": load0, "arms": {}}
    print(f"teacher held-out ppl {t_eval['ppl']:.2f}")
    for arm in args.arms.split(","):
        kd_w, ce_w, hid_w = ARMS[arm]
        # student hidden_states[keep_first] = after its last "first" block; the teacher's equivalent
        # depth is where its kept last blocks start
        junction = (args.keep_first, n_layers - args.keep_last)
        spec = Student(layers="list", indices=[int(i) for i in args.layers.split(",")]) if args.layers else Student()
        params = Distill(student=spec, keep_first=args.keep_first, keep_last=args.keep_last, steps=args.steps,
                         batch_size=args.batch_size, max_length=args.seq_len, lr=args.lr,
                         temperature=args.temperature, kd_weight=kd_w, ce_weight=ce_w, seed=args.seed,
                         hidden_weight=hid_w, hidden_layers=[junction] if hid_w else [], hidden_loss="cosine",
                         eval_every=args.eval_every)
        student = st.init_student(teacher32, params)
        if "student_init_ppl" not in result:
            result["student_layers"] = student.config.num_hidden_layers
            result["student_init_ppl"] = ds.heldout_loss(student, held, tok.pad_token_id)["ppl"]
            print(f"student ({result['student_layers']} blocks) at init: ppl {result['student_init_ppl']:.1f}")
        start = time.perf_counter()
        history = ds.train(student, teacher, train, params, tok.pad_token_id,
                           eval_pools=held if args.eval_every else None)
        seconds = time.perf_counter() - start
        ppl = ds.heldout_loss(student, held, tok.pad_token_id)["ppl"]
        result["arms"][arm] = {"kd_weight": kd_w, "ce_weight": ce_w, "hidden_weight": hid_w, "ppl": ppl, "train_seconds": seconds,
                               "seconds_per_step": seconds / args.steps,
                               "loss": [h["loss"] for h in history], "ce": [h["ce"] for h in history],
                               "heldout_ppl": [(h["step"], h["heldout_ppl"]) for h in history if "heldout_ppl" in h]}
        print(f"{arm:>6}: held-out ppl {ppl:7.2f}  ({seconds / args.steps:.2f} s/step, load {os.getloadavg()[0]:.1f})")
        del student

    arms = result["arms"]
    if "ce" in arms:
        for arm in arms:
            if arm != "ce":
                gain = 1 - arms[arm]["ppl"] / arms["ce"]["ppl"]
                arms[arm]["ppl_reduction_vs_ce"] = gain
                print(f"{arm} vs ce: {100 * gain:+.1f}% lower perplexity (target >= 10%)")
                if arms["ce"]["heldout_ppl"]:  # against CE stopped at its best step, which only an oracle knows
                    ce_best = min(p for _, p in arms["ce"]["heldout_ppl"])
                    arms[arm]["ppl_reduction_vs_ce_best_step"] = 1 - arms[arm]["ppl"] / ce_best
                    print(f"{arm} vs ce at its best evaluated step ({ce_best:.2f}): "
                          f"{100 * arms[arm]['ppl_reduction_vs_ce_best_step']:+.1f}%")
    best = min(arms, key=lambda a: arms[a]["ppl"])
    ratio = arms[best]["ppl"] / t_eval["ppl"]
    share = result["student_layers"] / n_layers
    result.update(best_arm=best, best_over_teacher=ratio, layer_share=share,
                  peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  load_avg_end=os.getloadavg()[0])
    print(f"best arm {best}: {ratio:.2f}x teacher perplexity with {100 * share:.0f}% of its blocks "
          f"(target <= 1.3x with <= 55%); load avg end {result['load_avg_end']:.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (arm, r) in enumerate(result["arms"].items()):
        a.plot(range(1, len(r["ce"]) + 1), r["ce"], color=f"C{i}", label=f"{arm}: train CE on gold", alpha=0.5)
        if r.get("heldout_ppl"):
            steps, ppl = zip(*r["heldout_ppl"])
            a.plot(steps, [math.log(p) for p in ppl], "o-", color=f"C{i}", label=f"{arm}: held-out log ppl")
    a.axhline(math.log(result["teacher_ppl"]), color="grey", ls="--", label="teacher held-out log ppl")
    a.set(xlabel="step", ylabel="nats per token", title="training")
    a.legend()
    names = ["teacher", "student init"] + list(result["arms"])
    ppls = [result["teacher_ppl"], result["student_init_ppl"]] + [r["ppl"] for r in result["arms"].values()]
    b.bar(names, [math.log(p) for p in ppls], color=["grey", "lightgrey"] + ["C0", "C1", "C2", "C3"][: len(names) - 2])
    for i, p in enumerate(ppls):
        b.text(i, math.log(p), f"{p:.1f}", ha="center", va="bottom")
    b.set(ylabel="log held-out perplexity", title=f"PubMedQA held-out, {result['args']['steps']} steps")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
