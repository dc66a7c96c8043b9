"""Training throughput and peak memory: the distill engine vs a naive KD step, same batches, same loss.

    python bench/distill_speed.py                         # 8 steps of 8 x 384 tokens per arm
    python bench/distill_speed.py --steps 4 --batch-size 4  # a quick look
    python bench/distill_speed.py --device cuda --steps 20    # on a GPU: peak GPU memory instead of RSS

Workload: the distill stage's shape on real domain text: PubMedQA prompts (question + abstract,
~300-400 tokens) with the expert LONG_ANSWER as the assistant target (~50 tokens); teacher
SmolLM2-135M-Instruct (`synthesize.teacher`), student its first 8 + last 8 blocks, KD at the
stage's defaults (kd_weight 0.5, ce_weight 0.5, T 2, forward KL, online teacher).

  naive   a textbook KD step: teacher and student full forward in float32 (no autocast), logits
          at every position over the full vocabulary, `F.kl_div(log_softmax(s/T), log_softmax(t/T),
          log_target=True)` summed over the vocabulary and masked to the target positions, plus
          CE; no chunking.
  engine  `tasks.distill.train` with the same Distill params.

Each arm runs in its own subprocess so peak RSS (`ru_maxrss` of that process) is its own
high-water mark. Both arms first score one fixed batch from the same initial weights and the
parent asserts the two loss values agree (the engine runs its blocks under bf16 autocast, so
within `--rtol`); then each trains `--steps` steps over the same `steps x batch` examples
(each seen once, so the engine's memoised teacher logits never hit) and reports tokens/s
(attended tokens / wall seconds, model loading excluded). Writes bench/results/distill_speed.json and .png.
With `--device cuda` the memory figure is the peak GPU memory the process allocated
(torch.cuda.max_memory_allocated) and "after loading" the models' share of it; the engine runs
under bf16 autocast there, the naive arm in float32 (TF32 matmuls off, PyTorch's default).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tasks import distill as ds
from tasks import models
from tasks import student as st
from tasks.params import Distill, load_params

ROOT = Path(__file__).resolve().parents[1]
PUBMEDQA = Path(os.environ.get("STILLHOUSE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "pubmedqa"
RESULTS = ROOT / "bench" / "results"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_mb(device: str) -> float:
    """The process's memory high-water mark on `device`: peak RSS, or peak allocated GPU memory."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    return rss_mb()


def examples(tok, n: int, max_length: int) -> list[ds.Example]:
    """PubMedQA question + contexts -> LONG_ANSWER, as the stage's label-task examples (prompt cut like the stage)."""
    data = json.loads((PUBMEDQA / "ori_pqal.json").read_text())
    out = []
    for pmid, r in sorted(data.items())[:n]:
        prompt = models.chat_prompt(tok, ds.TAGS[ds.LABEL] + r["QUESTION"] + "\n" + " ".join(r["CONTEXTS"]))
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        t = tok(r["LONG_ANSWER"], add_special_tokens=False)["input_ids"][: max_length // 4] + [tok.eos_token_id]
        p = p[: max_length - len(t)]  # equal work in both arms; the stage keeps head + tail instead
        out.append(ds.Example(ds.LABEL, pmid, p, t))
    return out


def naive_loss(student, teacher, batch: dict, params: Distill) -> torch.Tensor:
    """KD + CE the textbook way: full fp32 logits everywhere, F.kl_div over the whole vocabulary."""
    ids, attn = batch["input_ids"], batch["attention_mask"]
    mask = batch["target_mask"][:, 1:].float()  # position t predicts token t + 1
    s = student(input_ids=ids, attention_mask=attn).logits[:, :-1]  # (B, L-1, V) float32
    with torch.no_grad():
        t = teacher(input_ids=ids, attention_mask=attn).logits[:, :-1]
    T = params.temperature
    kl = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), reduction="none", log_target=True).sum(-1)
    kd = T**2 * (kl * mask).sum() / mask.sum()
    ce = (F.cross_entropy(s.transpose(1, 2), ids[:, 1:], reduction="none") * mask).sum() / mask.sum()
    return params.kd_weight * kd + params.ce_weight * ce


def naive_train(student, teacher, pool: list[ds.Example], params: Distill, pad_id: int) -> tuple[float, float]:
    """The same steps as distill.train (AdamW, clip 1.0), one batch after another; (seconds, first loss)."""
    device = next(student.parameters()).device
    opt = torch.optim.AdamW(student.parameters(), lr=params.lr, weight_decay=0.0)
    order = pool[:]
    random.Random(params.seed).shuffle(order)
    start, first = time.perf_counter(), None
    for i in range(params.steps):
        batch = ds.collate(order[i * params.batch_size : (i + 1) * params.batch_size], pad_id, device)
        loss = naive_loss(student, teacher, batch, params)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        first = float(loss) if first is None else first
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, first


def child(arm: str, args) -> dict:
    """One arm in this process: loss on the check batch, then timed training; JSON on stdout."""
    path = models.resolve_model(load_params(ROOT / "params.yaml").synthesize.teacher)
    tok = models.load_tokenizer(path)
    pool = examples(tok, args.batch_size * (args.steps + 1), args.max_length)
    check, train = pool[: args.batch_size], pool[args.batch_size :]
    params = Distill(steps=args.steps, batch_size=args.batch_size, max_length=args.max_length, lr=1e-4,
                     temperature=2.0, kd_weight=0.5, ce_weight=0.5, seed=0)
    teacher = models.load_causal_lm(path, "float32", args.device)
    student, probe = st.init_student(teacher, params), st.init_student(teacher, params)
    if arm == "engine":  # what distill.run does: the teacher only infers
        teacher = teacher.to(models.DTYPES[models.resolve_dtype("auto", args.device)])
    loaded = peak_mb(args.device)
    # Both arms: one training step of a copy of the initial student on exactly the check batch;
    # the loss it reports is computed before the update. It also warms both arms up alike.
    one = params.model_copy(update={"steps": 1})
    if arm == "naive":
        check_loss = naive_train(probe, teacher, check, one, tok.pad_token_id)[1]
    else:
        check_loss = ds.train(probe, teacher, {ds.LABEL: check, ds.RATIONALE: []}, one, tok.pad_token_id)[0]["loss"]
    del probe
    tokens = sum(e.length for e in train)
    if arm == "naive":
        seconds = naive_train(student, teacher, train, params, tok.pad_token_id)[0]
    else:
        start = time.perf_counter()
        ds.train(student, teacher, {ds.LABEL: train, ds.RATIONALE: []}, params, tok.pad_token_id)
        seconds = time.perf_counter() - start
    return {"arm": arm, "check_loss": check_loss, "seconds": seconds, "tokens": tokens,
            "target_tokens": sum(len(e.target_ids) for e in train), "tokens_per_s": tokens / seconds,
            "rss_after_load_mb": loaded, "peak_rss_mb": peak_mb(args.device), "threads": torch.get_num_threads(),
            "device": models.device_name(args.device)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=384)  # the stage's params.yaml max_length
    ap.add_argument("--rtol", type=float, default=0.02)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (memory: peak RSS, or peak GPU memory allocated)")
    ap.add_argument("--child", choices=["naive", "engine"])
    ap.add_argument("--out", default=str(RESULTS / "distill_speed"))
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args)))
        return

    load0 = os.getloadavg()[0]
    mem = "peak GPU memory" if args.device.startswith("cuda") else "peak RSS"
    runs = {}
    for arm in ("naive", "engine"):
        cmd = [sys.executable, __file__, "--child", arm, "--steps", str(args.steps), "--batch-size",
               str(args.batch_size), "--max-length", str(args.max_length), "--device", args.device]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # failures reported below
        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode or not lines:
            sys.exit(f"{arm} arm failed:\n{proc.stderr[-3000:]}")
        runs[arm] = json.loads(lines[-1][len("RESULT "):])
        r = runs[arm]
        print(f"{arm:>6}: {r['tokens_per_s']:7.1f} tokens/s ({r['tokens']} tokens, {r['target_tokens']} targets, "
              f"{r['seconds']:.1f} s)  {mem} {r['peak_rss_mb']:7.0f} MB (after loading {r['rss_after_load_mb']:.0f} MB)  "
              f"check-batch loss {r['check_loss']:.4f}  load {os.getloadavg()[0]:.1f}")
    n, e = runs["naive"], runs["engine"]
    close = abs(e["check_loss"] - n["check_loss"]) <= args.rtol * abs(n["check_loss"])
    speed, memory = e["tokens_per_s"] / n["tokens_per_s"], e["peak_rss_mb"] / n["peak_rss_mb"]
    train_mem = (e["peak_rss_mb"] - e["rss_after_load_mb"]) / max(1.0, n["peak_rss_mb"] - n["rss_after_load_mb"])
    result = {"args": vars(args), "runs": runs, "speedup": speed, "peak_rss_ratio": memory,
              "training_rss_ratio": train_mem, "loss_close": close, "load_avg_start": load0,
              "load_avg_end": os.getloadavg()[0]}
    print(f"engine / naive: {speed:.2f}x tokens/s (target >= 1.8x), {mem} {100 * memory:.0f}% of naive "
          f"(target <= 70%; training's increment over the loaded models {100 * train_mem:.0f}%); check-batch "
          f"loss {e['check_loss']:.4f} vs {n['check_loss']:.4f} (|diff| {abs(e['check_loss'] - n['check_loss']):.4f})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    assert close, f"the arms compute different losses: engine {e['check_loss']} vs naive {n['check_loss']}"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = ["naive", "engine"]
    runs = result["runs"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.5))
    a.bar(arms, [runs[x]["tokens_per_s"] for x in arms], color=["grey", "C0"])
    a.set(ylabel="tokens / s", title=f"throughput ({result['speedup']:.2f}x)")
    b.bar(arms, [runs[x]["peak_rss_mb"] for x in arms], color=["grey", "C0"], label="peak")
    b.bar(arms, [runs[x]["rss_after_load_mb"] for x in arms], color="lightgrey", label="after loading models")
    gpu = result["args"].get("device", "cpu").startswith("cuda")
    b.set(ylabel=f"peak {'GPU memory allocated' if gpu else 'RSS'} (MB)", title=f"memory ({100 * result['peak_rss_ratio']:.0f}% of naive)")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
