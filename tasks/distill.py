"""Distill the teacher into a smaller student: multi-task KD (distilling step-by-step), on- and off-policy.

    stillhouse stage distill --domain healthcare       # what `dvc repro distill@healthcare` runs
    accelerate launch --config_file configs/accelerate_multi_gpu.yaml -m tasks.distill --domain healthcare

Inputs:  data/<domain>/condense/train.jsonl   training rows (record + teacher rationale, if kept;
                                              teacher_topk when synthesize.topk_logprobs > 0)
         data/<domain>/synthesize/test.jsonl  held-out rows with the teacher's answers
         synthesize.teacher                   the teacher spec (tasks/models.resolve_model)
Outputs: data/<domain>/distill/student/       save_pretrained student (bf16) + tokenizer +
                                              stillhouse.json (prompt format, kept layers, teacher)
         data/<domain>/distill/metrics.json   held-out loss / perplexity / accuracy of teacher,
                                              student before and after training; speed; loss terms
         data/<domain>/distill/history.csv    per step: every loss term unweighted and weighted, lr
         data/<domain>/distill/eval.csv       held-out loss by step: validation evals, test before/after
         data/<domain>/distill/predictions.jsonl  one row per held-out record (fairness reads it)
         data/<domain>/distill/checkpoints/   while training (checkpoint_every); removed when done
Params:  distill.* (tasks/params.py Distill), synthesize.teacher.

Student: tasks/student.py (the teacher's first and last blocks by default; other selections, any
model sharing the tokenizer, LoRA).

Parts (tasks/distillation/): examples.py (records -> prompts, targets, batches, draw order),
forward.py (assistant-position hidden states), teacher.py (online memo, stored top-k),
objectives.py (the loss below), on_policy.py (GKD sampling), checkpoints.py (resume),
distributed.py (multi-GPU), trainer.py (the loop, held-out loss). This file: evaluation and the stage.

Tasks (Hsieh et al., 2023, "Distilling Step-by-Step!", arXiv:2305.02301, Eq. 3), per record:
  label      user "[label] <question>"     -> assistant "Answer: <gold label>"
  rationale  user "[rationale] <question>" -> assistant "<teacher rationale>" (kept rows only)
  L = (1 - rationale_weight) * L_label + rationale_weight * L_rationale     (L_label alone when
      no row has a rationale), each task's
  L_task = kd_weight * D_T(p_teacher, q_student) + ce_weight * CE(gold tokens)
  (+ hidden_weight * L_hidden over both tasks)
on the assistant tokens only (the end-of-turn token included). D is `divergence` at temperature
T, scaled by T^2 (tasks/losses.py: forward KL by default, Hinton et al., 2015). history.csv
carries each term unweighted (kd, ce, hidden) and as it enters the loss (kd_weighted = kd_weight
* kd, ...), so the weights can be read against the magnitudes they multiply.

Teacher targets, `teacher_source`:
  online  the teacher's logits, computed under no_grad. Its final hidden states at the assistant
          positions are memoised per example (the teacher is frozen: a redrawn example needs no
          second forward pass) and projected by its head chunk by chunk, like the student's.
  topk    offline: the k most likely tokens and log-probs stored by synthesize per teacher
          output token (topk_logprobs > 0). The KD term runs over those k tokens plus one tail
          bucket holding the remaining mass (losses.topk_log_probs; no temperature: T = 1). A
          stored distribution is used where the target tokens match the teacher's own output
          tokens: the rationale (a prefix of the teacher's output) and "Answer: <label>" (its
          suffix, when the teacher's answer is the gold label); other positions get CE only.
          Counted in metrics (n_topk_positions, n_topk_unaligned).
On-policy (GKD, Agarwal et al., 2024, arXiv:2306.13649): with probability `gkd_lambda` a step
replaces the batch's targets by the student's own sampled continuations of the same prompts
(no_grad, `gkd_temperature`, up to `gkd_max_new_tokens`), scored by the online teacher; that
step's loss is kd_weight * `gkd_divergence` (generalized JSD with `beta` by default), no CE.
Hidden-state alignment (FitNets, Romero et al., 2015): MSE or cosine distance between student
and teacher hidden states (`hidden_layers` pairs of hidden_states indices, default the last of
each) at the assistant positions, through a learned linear projection when the widths differ,
trained with the student (not saved with it).

Memory: the head projection and every loss run in float32, outside autocast, over chunks of
`chunk_size` assistant positions (losses.chunked_head_loss): the (positions x vocabulary)
logits of the whole batch never exist at once. Forward passes run under bf16 autocast where the
device has native bf16 (CUDA, AVX512-BF16/AMX CPUs), in float32 elsewhere (forward.autocast).
AdamW, linear warmup then decay, grad-norm clip 1.0. Each step draws
half its batch from each task's pool (shuffled passes, seeded per pass).

Checkpoints: every `checkpoint_every` steps the student's trainable weights, optimizer,
scheduler, RNG states, the data-order cursors, the teacher memo, early-stopping state and the
history go to checkpoints/<key>.pt (written to a temporary file, then renamed: atomic). <key>
hashes the params, the examples and the initial student weights; a run with the same key
resumes from it and reaches the same weights as an uninterrupted run (tests/test_distill.py
kills one). Early stopping: with eval_every > 0, `val_fraction` of the training rows are held
out; their loss every eval_every steps; after `patience` evaluations without a new best the run
stops, and the best weights are restored.

Multi-GPU: under `accelerate launch` or torchrun (WORLD_SIZE > 1) each process takes its share
of every step's batch; the loss terms are normalised by the whole batch's token counts and the
gradients summed with one all-reduce, so the step equals the one-process step (tasks.distillation.
distributed). Held-out loss and the evaluation answers are split and gathered; only the main
process writes, and its checkpoints carry every process's own teacher memo and RNG state. A single process never touches accelerate (it measured no faster).

A prompt longer than `max_length` minus its target keeps its first HEAD_TOKENS tokens (chat
header, task tag) and its tail (end of the text, the question, the assistant header): the middle
of the text goes, counted in metrics n_train_truncated / n_test_truncated. Generation at
evaluation reads the whole prompt.

Evaluation, on the held-out rows: loss and perplexity = token-mean CE over the assistant tokens
of their label examples and, where a row has a kept rationale, its rationale example; accuracy
= greedy answer to the "[label]" prompt, parsed with domain.parse_answer. The teacher's accuracy
is its chain-of-thought accuracy from synthesis (`correct`); `teacher_direct_accuracy` is the
teacher answering the same "[label]" prompt. "After" numbers are measured on the saved bf16
student, the model that is registered and served.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import random
import resource
import time
from pathlib import Path

import torch

from domains import get_domain
from domains.base import Domain
from tasks import models
from tasks.distillation.distributed import Dist
from tasks.distillation.examples import (  # noqa: F401 (API: tests, bench)
    ANSWER,
    LABEL,
    RATIONALE,
    TAGS,
    Example,
    build_examples,
    collate,
    gold_label,
    make_example,
    task_prompt,
)
from tasks.distillation.forward import EVAL_BATCH
from tasks.distillation.trainer import HISTORY_FIELDS, heldout_loss, train
from tasks.params import Distill, Params, stage_dir
from tasks.records import read_jsonl, write_json, write_jsonl
from tasks.student import (  # noqa: F401 (API)
    finalize_student, init_student, kept_layers, perplexity_layers, select_layers)

PARAMS = ("distill", "synthesize.teacher")  # the params.yaml keys this stage reads (dvc.yaml too)
EVAL_FIELDS = ("step", "split", "loss", "ppl", "label_loss", "rationale_loss")  # eval.csv columns


# ---------------------------------------------------------------------------------------------
# Evaluation


def answers(model, tok, domain: Domain, rows: list[dict], max_new_tokens: int, desc: str) -> list[dict]:
    """Greedy completion of each row's "[label]" prompt: {text, answer, correct} (under data
    parallelism each process answers its share of the rows; every process gets all answers)."""
    dist = Dist.from_env()
    rows = dist.shard(rows)
    prompts = [task_prompt(domain, tok, r) for r in rows]
    outs = models.generate(model, tok, prompts, batch_size=EVAL_BATCH, max_new_tokens=max_new_tokens, desc=desc,
                           progress=dist.main)
    result = []
    for row, out in zip(rows, outs):
        answer = domain.parse_answer(out["text"])
        correct = answer is not None and answer == gold_label(domain, row)
        result.append({"text": out["text"], "answer": answer, "correct": correct})
    return dist.gather(result)


def _accuracy(results: list[dict]) -> float | None:
    return sum(r["correct"] for r in results) / len(results) if results else None


def bf16_copy(model):
    """The weights as saved (rounded to bfloat16; training keeps float32), for evaluation and
    saving; held in bfloat16 where the device runs it natively, else in float32 (same values)."""
    device = next(model.parameters()).device
    return copy.deepcopy(model).to(torch.bfloat16).to(models.DTYPES[models.resolve_dtype("auto", device)]).eval()


def split_validation(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, validation): a seeded `fraction` of the rows, at least one, held out for early stopping."""
    order = sorted(range(len(rows)), key=lambda i: hashlib.sha256(f"{seed}:{rows[i]['id']}".encode()).hexdigest())
    n = max(1, round(fraction * len(rows))) if len(rows) > 1 else 0
    held = set(order[:n])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


# ---------------------------------------------------------------------------------------------
# The stage


def run(
    train_rows: list[dict], test_rows: list[dict], domain: Domain, teacher_path: str, params: Distill,
    device: str | None = None, checkpoint_dir: Path | None = None,
) -> dict:
    """Build, train and evaluate the student; returns the student (bf16), tokenizer and results."""
    dist = Dist.from_env()
    if dist.world > 1 and device is None:
        from accelerate import PartialState  # sets up the process group of `accelerate launch`

        device = str(PartialState().device)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tok = models.load_tokenizer(teacher_path)
    pad_id = tok.pad_token_id
    val_rows: list[dict] = []
    if params.eval_every:
        train_rows, val_rows = split_validation(train_rows, params.val_fraction, params.seed)
    train_pools, train_cut = build_examples(domain, tok, train_rows, params.max_length)
    test_pools, test_cut = build_examples(domain, tok, test_rows, params.max_length)
    val_pools = build_examples(domain, tok, val_rows, params.max_length)[0] if val_rows else None
    if not train_pools[LABEL]:
        raise ValueError("distill: no training rows")

    teacher = models.load_causal_lm(teacher_path, "float32", str(device))
    if params.student.layers == "perplexity" and params.student.model is None:
        calibration = random.Random(params.seed).sample(train_pools[LABEL], min(params.student.calibration_examples,
                                                                                  len(train_pools[LABEL])))
        batch = collate(calibration, pad_id, device)
        keep = perplexity_layers(teacher, {k: batch[k] for k in ("input_ids", "attention_mask")},
                                 params.keep_first + params.keep_last)
    else:
        keep = select_layers(teacher.config.num_hidden_layers, params)  # None: another model
    student = init_student(teacher, params, keep)  # float32 master weights
    teacher = teacher.to(models.DTYPES[models.resolve_dtype("auto", device)])  # inference only: bf16 where native

    results: dict = {"kept_layers": keep, "teacher_layers": teacher.config.num_hidden_layers}
    results["teacher"] = heldout_loss(teacher, test_pools, pad_id)
    direct = answers(teacher, tok, domain, test_rows, params.eval_max_new_tokens, "teacher [label]")
    before_model = bf16_copy(student)
    results["before"] = heldout_loss(before_model, test_pools, pad_id)
    before = answers(before_model, tok, domain, test_rows, params.eval_max_new_tokens, "student before")
    del before_model

    t0 = time.perf_counter()
    history = train(student, teacher, train_pools, params, pad_id, eval_pools=val_pools, checkpoint_dir=checkpoint_dir)
    train_seconds = time.perf_counter() - t0
    del teacher

    student = finalize_student(student)  # LoRA merged into the weights (no-op without)
    final = bf16_copy(student)
    del student
    results["after"] = heldout_loss(final, test_pools, pad_id)
    after = answers(final, tok, domain, test_rows, params.eval_max_new_tokens, "student after")

    predictions = [
        {
            "id": row["id"],
            "groups": row.get("groups") or {},
            "label": gold_label(domain, row),
            "student_answer": a["answer"],
            "student_correct": a["correct"],
            "student_output": a["text"],
            "student_before_answer": b["answer"],
            "student_before_correct": b["correct"],
            "teacher_answer": row.get("teacher_answer"),
            "teacher_correct": bool(row.get("correct")),
            "teacher_direct_answer": d["answer"],
        }
        for row, a, b, d in zip(test_rows, after, before, direct)
    ]
    steps_run = len(history)
    tokens = sum(h["tokens"] for h in history)
    last = history[-1]
    topk_positions = sum(len(e.teacher_topk[0]) for p in train_pools.values() for e in p if e.teacher_topk)
    metrics = {
        "teacher_loss": results["teacher"]["loss"],
        "teacher_ppl": results["teacher"]["ppl"],
        "student_before_loss": results["before"]["loss"],
        "student_before_ppl": results["before"]["ppl"],
        "student_loss": results["after"]["loss"],
        "student_ppl": results["after"]["ppl"],
        "teacher_label_loss": results["teacher"]["label_loss"],
        "student_before_label_loss": results["before"]["label_loss"],
        "student_label_loss": results["after"]["label_loss"],
        "teacher_rationale_loss": results["teacher"]["rationale_loss"],
        "student_rationale_loss": results["after"]["rationale_loss"],
        "teacher_accuracy": sum(bool(r.get("correct")) for r in test_rows) / len(test_rows) if test_rows else None,
        "teacher_direct_accuracy": _accuracy(direct),
        "student_before_accuracy": _accuracy(before),
        "student_accuracy": _accuracy(after),
        "device": models.device_name(device),
        "processes": dist.world,
        "train_seconds": round(train_seconds, 3),
        "seconds_per_step": round(train_seconds / steps_run, 4),
        "tokens_per_second": round(tokens / train_seconds, 1) if train_seconds else None,
        "steps": steps_run,
        "best_step": last.get("best_step"),
        "on_policy_steps": sum(h["on_policy"] for h in history),
        "teacher_forward_examples": last["teacher_examples"],
        "n_train_label": len(train_pools[LABEL]),
        "n_train_rationale": len(train_pools[RATIONALE]),
        "n_val": len(val_rows),
        "n_topk_positions": topk_positions,  # assistant tokens with a stored teacher top-k
        "n_train_truncated": train_cut,  # examples whose prompt lost the middle of its text
        "n_test_truncated": test_cut,
        "n_test": len(test_rows),
        # The final step's loss terms: unweighted, and as they enter the loss (x their weight).
        **{f"{k}_final": last[k] for k in ("kd", "ce", "hidden", "kd_weighted", "ce_weighted", "hidden_weighted")},
        "loss_first": history[0]["loss"],
        "loss_final": last["loss"],
        "teacher_layers": results["teacher_layers"],
        "student_layers": final.config.num_hidden_layers,
        "student_parameters": sum(p.numel() for p in final.parameters()),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    evals = [{"step": 0, "split": "test", **results["before"]}]
    evals += [{"step": h["step"], "split": "val", **{k: h.get(f"heldout_{k}") for k in EVAL_FIELDS[2:]}}
              for h in history if "heldout_loss" in h]
    evals.append({"step": steps_run, "split": "test", **results["after"]})
    return {"student": final, "tokenizer": tok, "kept_layers": keep, "metrics": metrics, "history": history,
            "evals": evals, "predictions": predictions}


def write_csv(path: Path, rows: list[dict], fields: tuple[str, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def main(domain: str, params: Params, root: Path) -> dict:
    """Read the condensed train set and held-out rows, distill, write the student and reports."""
    dom = get_domain(domain)
    train_rows = read_jsonl(stage_dir(root, domain, "condense") / "train.jsonl")
    test_rows = read_jsonl(stage_dir(root, domain, "synthesize") / "test.jsonl")
    spec = params.synthesize.teacher
    out = stage_dir(root, domain, "distill")
    result = run(train_rows, test_rows, dom, models.resolve_model(spec), params.distill,
                 checkpoint_dir=out / "checkpoints")
    m = result["metrics"]
    summary = {k: m[k] for k in ("teacher_accuracy", "student_before_accuracy", "student_accuracy", "student_ppl",
                                 "train_seconds")}
    if not Dist.from_env().main:
        return summary  # one writer under `accelerate launch`

    student_dir = out / "student"
    result["student"].to(torch.bfloat16).save_pretrained(student_dir)  # bf16 on disk whatever the compute dtype
    result["tokenizer"].save_pretrained(student_dir)
    write_json(student_dir / "stillhouse.json", {
        "prompt_format": TAGS[LABEL] + "<question>",
        "answer_prefix": ANSWER,
        "teacher": spec,
        "kept_layers": result["kept_layers"],
        "domain": domain,
    })
    write_json(out / "metrics.json", m)
    write_csv(out / "history.csv", result["history"], HISTORY_FIELDS)
    write_csv(out / "eval.csv", result["evals"], EVAL_FIELDS)
    write_jsonl(out / "predictions.jsonl", result["predictions"])
    return summary


if __name__ == "__main__":  # `accelerate launch ... -m tasks.distill --domain <d>` (one process per GPU)
    import argparse

    parser = argparse.ArgumentParser(description="the distill stage alone (multi-GPU entry point)")
    parser.add_argument("--domain", default="healthcare")
    parser.add_argument("--root", default=".")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    from tasks.params import load_params

    print(json.dumps(main(args.domain, load_params(Path(args.root) / args.params), Path(args.root)), default=str))
