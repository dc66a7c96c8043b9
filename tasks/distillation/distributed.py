"""Data parallelism under `accelerate launch`: each process takes a share of the batch and one
all-reduce averages the gradients; a single process never touches torch.distributed."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    """This process's place in a multi-process (accelerate) launch; rank 0 of 1 otherwise."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world) if world > 1 else cls()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """All-reduce mean of the gradients (a no-op in one process)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        if not dist.is_initialized():  # accelerate / torchrun set the rendezvous variables
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))
