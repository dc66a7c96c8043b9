"""On-policy distillation (GKD, Agarwal et al., 2024, arXiv:2306.13649): the student's own sampled
continuations of the batch's prompts become its targets, scored by the teacher."""

from __future__ import annotations

import torch

from tasks.distillation.examples import Example
from tasks.distillation.forward import autocast
from tasks.params import Distill


@torch.no_grad()
def sample_continuations(student, examples: list[Example], params: Distill, pad_id: int, eos_id: int, seed: int) -> list[Example]:
    """The examples with their targets replaced by the student's own sampled continuations (GKD)."""
    device = next(student.parameters()).device
    width = max(len(e.prompt_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for b, e in enumerate(examples):  # left-padded, as decoder-only generation needs
        ids[b, width - len(e.prompt_ids) :] = torch.tensor(e.prompt_ids)
        attention[b, width - len(e.prompt_ids) :] = 1
    was_training = student.training
    student.eval()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), autocast(device):  # seeded per step: resumable
        torch.manual_seed(seed)
        out = student.generate(input_ids=ids.to(device), attention_mask=attention.to(device), do_sample=True,
                               temperature=params.gkd_temperature, top_k=0, top_p=1.0,
                               max_new_tokens=params.gkd_max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id)
    student.train(was_training)
    result = []
    for e, row in zip(examples, out[:, width:].tolist()):
        target = row[: row.index(eos_id) + 1] if eos_id in row else row
        result.append(Example(e.task, e.record_id, e.prompt_ids, target))
    return result
