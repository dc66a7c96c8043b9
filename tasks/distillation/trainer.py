"""The distill training loop: multi-task KD + CE steps (distilling step-by-step), on-policy steps
with probability gkd_lambda (GKD), early stopping on held-out loss, checkpoints and resume."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tasks.distillation.checkpoints import (
    PER_PROCESS,
    Resumable,
    own_part,
    run_key,
    save_checkpoint,
    trainable_parameters,
)
from tasks.distillation.distributed import Dist
from tasks.distillation.examples import LABEL, RATIONALE, TASKS, Draws, Example, collate
from tasks.distillation.forward import EVAL_BATCH, assistant_hidden, output_head
from tasks.distillation.objectives import HiddenAlign, head_loss, task_weights
from tasks.distillation.on_policy import sample_continuations
from tasks.distillation.teacher import TeacherStates, topk_targets
from tasks.params import Distill

WARMUP = 0.1  # share of the steps with a linearly rising learning rate
CLIP = 1.0
HISTORY_FIELDS = ("step", "loss", "kd", "ce", "hidden", "kd_weighted", "ce_weighted", "hidden_weighted",
                  "label_loss", "rationale_loss", "label_kd", "label_ce", "rationale_kd", "rationale_ce",
                  "on_policy", "lr", "grad_norm", "tokens", "teacher_examples", "seconds")


def _check(params: Distill, teacher, pools: dict[str, list[Example]], student) -> None:
    online = params.kd_weight and params.teacher_source == "online"
    if teacher is None and (online or params.gkd_lambda or params.hidden_weight):
        raise ValueError("distill: online KD, gkd_lambda and hidden_weight need the teacher model")
    if params.teacher_source == "topk" and params.kd_weight and not any(e.teacher_topk for p in pools.values() for e in p):
        raise ValueError("distill: teacher_source=topk but no example has teacher_topk "
                         "(run synthesize with topk_logprobs > 0 and the student's tokenizer)")
    if teacher is not None and (online or params.gkd_lambda):
        vs, vt = output_head(student)[0].shape[0], output_head(teacher)[0].shape[0]
        if vs != vt:
            raise ValueError(f"distill: student vocabulary {vs} != teacher's {vt}; token-level KD needs one tokenizer")


def step_split(batch_size: int, has_rationale: bool) -> tuple[int, int]:
    """Label and rationale examples per step: half and half in the multi-task step (Hsieh et al.,
    2023, Sec. 3.2), all label examples without rationales."""
    if not has_rationale:
        return batch_size, 0
    n_label = max(1, math.ceil(batch_size / 2))
    return n_label, max(1, batch_size - n_label)


def train(student, teacher, pools: dict[str, list[Example]], params: Distill, pad_id: int, *,
          eval_pools: dict[str, list[Example]] | None = None, checkpoint_dir: str | Path | None = None,
          progress: bool = True) -> list[dict]:
    """Train `student` in place for params.steps (fewer when early stopping); one history row per step.

    eval_pools: held-out examples whose loss is measured every `eval_every` steps (rows of those
    steps add heldout_loss, heldout_ppl, ...; `patience` stops on them). checkpoint_dir: where
    checkpoints/<key>.pt is written every `checkpoint_every` steps and resumed from.
    `teacher` may be None with teacher_source=topk (no on-policy steps, no hidden alignment).
    """
    device = next(student.parameters()).device
    dist = Dist.from_env()
    _check(params, teacher, pools, student)
    if params.batch_size < dist.world:
        raise ValueError(f"distill: batch_size {params.batch_size} < {dist.world} processes (each takes a share)")
    key = run_key(params, pools, student) if checkpoint_dir is not None and params.checkpoint_every else None
    torch.manual_seed(params.seed)
    has_rationale = bool(pools[RATIONALE]) and params.rationale_weight > 0
    weights = task_weights(params, has_rationale)
    n_label, n_rationale = step_split(params.batch_size, has_rationale)
    draws = {task: Draws(len(pools[task]), params.seed, task) for task in TASKS}
    eos_id = pools[LABEL][0].target_ids[-1]  # every target ends with the end-of-turn token (make_example)

    align = None
    if params.hidden_weight:
        align = HiddenAlign(params.hidden_layers, student.config.hidden_size, teacher.config.hidden_size,
                            params.hidden_loss).to(device)
    trainable = list(trainable_parameters(student).values()) + (list(align.parameters()) if align is not None else [])
    optimizer = torch.optim.AdamW(trainable, lr=params.lr, weight_decay=0.0)
    warmup = max(1, round(WARMUP * params.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (params.steps - s) / max(1, params.steps - warmup))
    )
    teacher_states = None
    if teacher is not None and (params.teacher_source == "online" or params.gkd_lambda or align is not None):
        teacher.eval()
        teacher_states = TeacherStates(teacher, pad_id, align.teacher_layers if align is not None else ())
    resumable = Resumable(student, align, optimizer, schedule, draws, teacher_states, pools)

    history: list[dict] = []
    best = {"loss": math.inf, "step": None, "weights": None, "bad": 0}  # early stopping
    start, elapsed = 1, 0.0
    path = Path(checkpoint_dir) / f"{key}.pt" if key else None
    if path is not None and path.exists():
        state = torch.load(path, weights_only=False, map_location="cpu")  # RNG states must stay on the CPU
        resumable.load_state_dict(state | own_part(state.pop("processes"), dist, path))
        history, best, elapsed, start = state["history"], state["best"], state["seconds"], state["step"] + 1
        print(f"distill: resumed from {path} at step {state['step']}")

    student.train()
    started = time.perf_counter() - elapsed
    bar = tqdm(range(start, params.steps + 1), desc="distill", unit="step", disable=not progress or not dist.main,
               initial=start - 1, total=params.steps)
    for step in bar:
        examples = [pools[LABEL][draws[LABEL].next()] for _ in range(n_label)] + [
            pools[RATIONALE][draws[RATIONALE].next()] for _ in range(n_rationale)]
        on_policy = params.gkd_lambda > 0 and random.Random(f"{params.seed}:gkd:{step}").random() < params.gkd_lambda
        examples = dist.shard(examples)  # every process drew the same batch; each takes its share
        if on_policy:  # each process samples its share, from its own seed
            examples = sample_continuations(student, examples, params, pad_id, eos_id,
                                            seed=params.seed * 1_000_003 + step + dist.rank * 1_000_000_007)
        losses = step_loss(student, teacher_states, align, examples, params, weights, on_policy, pad_id, device, dist)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        dist.sum_gradients(trainable)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, CLIP)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        schedule.step()
        terms = dist.sum_floats({k: float(v.detach()) for k, v in losses.items() if k != "tokens"} | {
            "tokens": losses["tokens"], "teacher_examples": teacher_states.computed if teacher_states else 0})
        row = {k: float(f"{v:.7g}") for k, v in terms.items()}  # 7 digits: terms can be tiny
        row.update(step=step, on_policy=int(on_policy), lr=lr, grad_norm=round(float(grad_norm), 4),
                   tokens=int(terms["tokens"]), teacher_examples=int(terms["teacher_examples"]),
                   seconds=round(time.perf_counter() - started, 3))
        stop = False
        if eval_pools is not None and params.eval_every and (step % params.eval_every == 0 or step == params.steps):
            student.eval()
            held = heldout_loss(student, eval_pools, pad_id)
            student.train()
            row.update({f"heldout_{k}": v for k, v in held.items()})
            if held["loss"] is not None and held["loss"] < best["loss"]:
                best = {"loss": held["loss"], "step": step, "bad": 0,
                        "weights": {n: p.detach().clone() for n, p in trainable_parameters(student).items()}}
            else:
                best["bad"] += 1
                stop = bool(params.patience) and best["bad"] >= params.patience
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", kd=f"{row['kd']:.3f}", ce=f"{row['ce']:.3f}")
        if path is not None and step % params.checkpoint_every == 0 and step < params.steps and not stop:
            state = resumable.state_dict()
            # each process's teacher memo and RNG are its own: the main process saves every one
            processes = dist.gather([{k: state.pop(k) for k in PER_PROCESS}])
            if dist.main:
                save_checkpoint(path, {"key": key, "step": step, "history": history, "best": best,
                                       "seconds": time.perf_counter() - started, "processes": processes, **state})
        if stop:
            break
    bar.close()
    if params.patience and best["weights"] is not None and best["step"] != history[-1]["step"]:
        with torch.no_grad():  # early stopping keeps the best validated weights
            for n, p in trainable_parameters(student).items():
                p.copy_(best["weights"][n])
    if history:
        history[-1]["best_step"] = best["step"]
    if path is not None and dist.main and path.exists():
        path.unlink()  # finished: nothing to resume
    student.eval()
    return history


def step_loss(student, teacher_states: TeacherStates | None, align: HiddenAlign | None, examples: list[Example],
              params: Distill, weights: dict[str, float], on_policy: bool, pad_id: int, device,
              dist: Dist = Dist()) -> dict:
    """One batch's loss with every term, unweighted and weighted (see HISTORY_FIELDS); under data
    parallelism, this process's share of the whole batch's loss and terms."""
    batch = collate(examples, pad_id, device)
    layers = align.student_layers if align is not None else ()
    h, targets, task, s_extra = assistant_hidden(student, batch, layers)
    teacher, t_extra = None, {}
    if teacher_states is not None and (on_policy or params.teacher_source == "online" or align is not None):
        dense = teacher_states(examples, device, memo=not on_policy)  # student samples are drawn once
        t_extra = dense.layers
        if on_policy or params.teacher_source == "online":
            teacher = dense
    if not on_policy and params.teacher_source == "topk":
        teacher = topk_targets(examples, device)
    weight, bias = output_head(student)
    kind = params.gkd_divergence if on_policy else params.divergence
    out = head_loss(h, weight, bias, targets, task, teacher, params, weights, kind, ce=not on_policy, dist=dist)
    out["hidden"] = h.new_zeros(())
    if align is not None:  # a mean over this share's positions, weighted by the share's part of the batch
        out["hidden"] = align(s_extra, t_extra) * (len(h) / dist.sum_floats({"n": len(h)})["n"])
    out["kd_weighted"] = params.kd_weight * out["kd"]
    out["ce_weighted"] = params.ce_weight * out["ce"] if not on_policy else h.new_zeros(())
    out["hidden_weighted"] = params.hidden_weight * out["hidden"]
    out["loss"] = out["loss"] + out["hidden_weighted"]
    out["hidden"], out["hidden_weighted"] = out["hidden"].detach(), out["hidden_weighted"].detach()
    out["tokens"] = int(batch["attention_mask"].sum())
    return out


@torch.no_grad()
def heldout_loss(model, pools: dict[str, list[Example]], pad_id: int, batch_size: int = EVAL_BATCH,
                 chunk_size: int = 256) -> dict:
    """Token-mean CE (and perplexity) over the assistant tokens of all examples, and per task
    (under data parallelism each process scores its share; the sums are added up)."""
    device = next(model.parameters()).device
    dist = Dist.from_env()
    examples = dist.shard(sorted(pools[LABEL] + pools[RATIONALE], key=lambda e: e.length))
    sums = {LABEL: 0.0, RATIONALE: 0.0}
    counts = {LABEL: 0, RATIONALE: 0}
    weight, bias = output_head(model)
    weight, bias = weight.float(), None if bias is None else bias.float()
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad_id, device)
        h, targets, task, _ = assistant_hidden(model, batch)
        for c in range(0, len(h), chunk_size):  # (chunk, V) logits at a time
            nll = F.cross_entropy(F.linear(h[c : c + chunk_size], weight, bias), targets[c : c + chunk_size],
                                  reduction="none")
            for flag, name in enumerate(TASKS):
                sel = task[c : c + chunk_size] == flag
                sums[name] += float(nll[sel].sum())
                counts[name] += int(sel.sum())
    summed = dist.sum_floats({f"{n}_sum": sums[n] for n in TASKS} | {f"{n}_count": counts[n] for n in TASKS})
    sums, counts = ({n: summed[f"{n}_sum"] for n in TASKS}, {n: int(summed[f"{n}_count"]) for n in TASKS})
    total = sum(counts.values())
    loss = sum(sums.values()) / total if total else None
    out = {"loss": loss, "ppl": math.exp(loss) if total else None}
    for name in TASKS:
        out[f"{name}_loss"] = sums[name] / counts[name] if counts[name] else None
    return out
