"""Resumable training: what a killed run needs to reach the same weights as an uninterrupted one
(trainable weights, optimizer, schedule, RNG, data order, teacher memo), saved atomically under a
key that hashes the params, the examples and the initial student. Under data parallelism the
main process writes it, with each process's own teacher memo and RNG state (PER_PROCESS)."""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from tasks.distillation.distributed import Dist
from tasks.distillation.examples import TASKS, Draws, Example
from tasks.distillation.objectives import HiddenAlign
from tasks.distillation.teacher import TeacherStates
from tasks.params import Distill


def run_key(params: Distill, pools: dict[str, list[Example]], student) -> str:
    """What a checkpoint must match to be resumed: training params, examples, initial weights."""
    h = hashlib.sha256()
    settings = params.model_dump(exclude={"eval_max_new_tokens", "checkpoint_every"})
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for task in TASKS:
        for e in pools[task]:
            h.update(json.dumps([e.task, e.prompt_ids, e.target_ids, e.teacher_topk]).encode())
    with torch.no_grad():
        for name, p in student.named_parameters():
            h.update(f"{name}:{tuple(p.shape)}:{float(p.sum(dtype=torch.float64)):.10e}".encode())
    return h.hexdigest()[:16]


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file, then rename: a kill mid-write leaves the previous checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def trainable_parameters(student) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in student.named_parameters() if p.requires_grad}


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


PER_PROCESS = ("teacher_memo", "teacher_computed", "rng")  # what differs between data-parallel processes


def own_part(processes: list[dict], dist: Dist, path: Path) -> dict:
    """This process's part of a checkpoint's per-process state (saved one per process)."""
    if len(processes) == dist.world:
        return processes[dist.rank]
    if dist.main:  # the batch is split another way: the same step, not the same rounding
        print(f"distill: {path} was written by {len(processes)} processes, this run has {dist.world}: "
              "it resumes, but not bit for bit")
    return processes[min(dist.rank, len(processes) - 1)]


@dataclass
class Resumable:
    """What a checkpoint restores besides the history: weights, optimizer, schedule, data order, teacher memo."""

    student: torch.nn.Module
    align: HiddenAlign | None
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    draws: dict[str, Draws]
    teacher: TeacherStates | None
    pools: dict[str, list[Example]]

    def state_dict(self) -> dict:
        index = {id(e): (task, i) for task in TASKS for i, e in enumerate(self.pools[task])}
        return {
            "student": {n: p.detach() for n, p in trainable_parameters(self.student).items()},  # LoRA: adapters only
            "align": self.align.state_dict() if self.align is not None else None,
            "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
            "draws": {task: d.state() for task, d in self.draws.items()},
            "teacher_memo": self.teacher.state(index) if self.teacher is not None else {},
            "teacher_computed": self.teacher.computed if self.teacher is not None else 0,
            "rng": _rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["student"], strict=False)
        if self.align is not None:
            self.align.load_state_dict(state["align"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        for task, d in self.draws.items():
            d.load(state["draws"][task])
        if self.teacher is not None:
            self.teacher.load(state["teacher_memo"], self.pools)
            self.teacher.computed = state["teacher_computed"]
        _set_rng_state(state["rng"])
