"""A local transformers teacher: a save_pretrained folder, a GGUF file or package, or a hub id.

Batched on CPU or CUDA (whichever torch sees), bf16 by default: on a 2-core CPU bf16 runs
1.4x float32, and a length-sorted batch of 32 short prompts decodes ~16x the tokens/s of one
prompt at a time (bench/synthesis.py). The model loads on the first `generate`, so a finished
synthesis never loads it. Batched greedy text can differ from unbatched text (padding changes
bf16 numerics), which is why the batch settings are part of `settings()` and of the cache key.
"""

from __future__ import annotations

import hashlib

import torch

from tasks import models
from tasks.teachers.base import Options, Result

ANSWER = "Answer:"  # where the answer tokens start, for answer_logprob


class TransformersTeacher:
    kind = "transformers"

    def __init__(self, spec: str, *, name: str | None = None, dtype: str = "auto", batch_size: int = 32,
                 max_batch_tokens: int | None = None):
        self.spec, self.name = spec, name or spec
        self.batch_size, self.max_batch_tokens = batch_size, max_batch_tokens
        self.path = models.resolve_model(spec)  # GGUF: converted once, later runs find the folder
        self.tok = models.load_tokenizer(self.path)
        self.model = None
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = models.resolve_dtype(dtype, self.device)  # the concrete dtype: part of the cache key

    def fingerprint(self) -> str:
        return models.model_fingerprint(self.spec)

    def settings(self, opts: Options) -> dict:
        return {"backend": self.kind, "dtype": self.dtype, "device": self.device, "batch_size": self.batch_size,
                "max_batch_tokens": self.max_batch_tokens, "max_new_tokens": opts.max_new_tokens, "n": opts.n,
                "temperature": opts.temperature, "greedy": opts.temperature == 0, "scores": opts.scores,
                "topk": opts.topk, "seed": opts.seed if opts.temperature > 0 else None}

    def prompt(self, user: str) -> str:
        return models.chat_prompt(self.tok, user)

    def tokens(self, prompt: str) -> int:
        return len(self.tok(prompt, add_special_tokens=False)["input_ids"])

    def generate(self, requests: list[tuple[str, str]], opts: Options) -> list[Result]:
        """One batch: the caller already sorted and sized it."""
        if self.model is None:
            self.model = models.load_causal_lm(self.path, self.dtype, self.device)
        if opts.temperature > 0:  # reproducible per batch, independent of what ran before it
            torch.manual_seed(int(hashlib.sha256(f"{opts.seed}:{requests[0][0]}".encode()).hexdigest()[:8], 16))
        out = models.sample(
            self.model, self.tok, [p for _, p in requests], n=opts.n, temperature=opts.temperature,
            batch_size=len(requests), max_new_tokens=opts.max_new_tokens, scores=opts.scores, topk=opts.topk,
            answer_marker=ANSWER, progress=False,
        )
        return [Result(prompt_tokens=r["prompt_tokens"], samples=r["samples"]) for r in out]

    def close(self) -> None:
        self.model = None
