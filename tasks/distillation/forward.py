"""Forward passes at the assistant positions: bf16-autocast blocks (where the hardware has native
bf16), float32 hidden states; the head is left to the caller, so the (positions x vocabulary)
logits can be built chunk by chunk."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tasks import models

EVAL_BATCH = 16  # examples per no-grad pass (held-out loss, generation, offline top-k)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on the device's type where it runs bf16 natively (models.native_bf16); a
    no-op (float32) elsewhere, where emulated bf16 would be far slower."""
    device = torch.device(device)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and models.native_bf16(device))


def assistant_hidden(model, batch: dict[str, torch.Tensor], layers: tuple[int, ...] = ()):
    """Float32 hidden states `(N, H)` at the N positions that predict an assistant token, their
    gold tokens `(N,)`, task flags `(N,)`, and `{i: (N, H)}` of hidden_states[i] for `layers`.

    The blocks run under `autocast`; the head is left to the caller (float32, chunked).
    """
    device = batch["input_ids"].device
    with autocast(device):
        out = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               output_hidden_states=bool(layers))
    predicts = batch["target_mask"][:, 1:].bool()  # position t predicts token t + 1
    h = out[0][:, :-1][predicts].float()  # (N, H)
    extra = {i: out.hidden_states[i][:, :-1][predicts].float() for i in layers}
    targets = batch["input_ids"][:, 1:][predicts]
    task = batch["task"][:, None].expand_as(predicts)[predicts]
    return h, targets, task, extra


def output_head(model) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The LM head's weight `(V, H)` and bias (or None), for projections outside autocast."""
    head = model.get_output_embeddings()
    return head.weight, head.bias


def target_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float32 logits `(N, V)` at the N assistant-predicting positions, gold tokens `(N,)`, task
    flags `(N,)` (all at once: for small batches and tests; training goes through chunks)."""
    h, targets, task, _ = assistant_hidden(model, batch)
    weight, bias = output_head(model)
    return F.linear(h, weight.float(), None if bias is None else bias.float()), targets, task
