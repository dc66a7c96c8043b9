"""Data parallelism under `accelerate launch` (or torchrun): each process takes a share of every
step's batch, every loss is normalised by the whole batch's counts, and one all-reduce sums the
gradients, so N processes take the same step as one process with the whole batch. A single
process never touches torch.distributed."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    """This process's place in a multi-process launch; rank 0 of 1 otherwise."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world) if world > 1 else cls()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This process's share: every world-th item from its rank (all of them in one process)."""
        return items[self.rank :: self.world]

    def gather(self, share: list) -> list:
        """The inverse of `shard`: every process's share back in the original order, on every process."""
        if self.world == 1:
            return share
        shares = [None] * self.world
        self._group().all_gather_object(shares, share)
        out = [None] * sum(len(s) for s in shares)
        for rank, items in enumerate(shares):
            out[rank :: self.world] = items
        return out

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over the processes (in place; returned as is in one process)."""
        if self.world > 1:
            self._group().all_reduce(values)
        return values

    @staticmethod
    def _group():
        import torch.distributed as dist

        if not dist.is_initialized():  # accelerate / torchrun set the rendezvous variables
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist

    def sum_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """All-reduce sum of the gradients: each process's loss is its share of the batch's loss."""
        grads = [p.grad for p in params if p.grad is not None]
        if self.world == 1 or not grads:
            return
        flat = self.sum(torch.cat([g.reshape(-1) for g in grads]))
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))

    def sum_floats(self, values: dict[str, float]) -> dict[str, float]:
        """The dict's numbers summed over the processes (one all-reduce, float64)."""
        if self.world == 1:
            return values
        keys = list(values)
        device = "cuda" if torch.cuda.is_available() else "cpu"  # nccl reduces CUDA tensors only
        total = self.sum(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device))
        return dict(zip(keys, total.tolist()))
