"""CommonsenseQA kit shared by bench/distill_sbs.py (issue 6.2) and bench/condense.py (issue 7):
the data, ONE prompt format, ONE scorer, the paired bootstrap, and a student that learns CQA
on one CPU core.

Data: `../shared/data/distill_step_by_step/cqa` (Hsieh et al., 2023, arXiv:2305.02301): 9,741
train / 1,221 test questions, five choices each, PaLM-540B chain-of-thought completions
(tasks.teachers.replay.load_step_by_step). A PaLM rationale is kept only when PaLM's answer is
the gold one; the rationale is the text before "So the answer is" (the paper's split).

Prompt format (the project's student format, CONTRACT.md; both benches, both tasks):
  label      user "[label] <question>\\nAnswer Choices:\\n(a) ..(e) .."   -> "Answer: <choice text>"
  rationale  user "[rationale] <same>"                                 -> PaLM rationale (first
             `rationale_tokens` tokens)
(user turn wrapped by tasks.models.chat_prompt; every target ends with the end-of-turn token).

Scorer (`score`): cloze, one forward pass per question. The prompt + "Answer:" is followed by
the five choices' token branches ("Answer: <choice>" tokens + end-of-turn), packed in ONE
sequence with a 4D attention mask (each branch sees the prompt and itself) and per-branch
position ids, so every branch is scored exactly as if it followed the prompt alone. A choice's
score = the sum of its tokens' log-probs including the end-of-turn token, i.e. the probability
that the student's whole answer is that choice; prediction = argmax over the five. This is the
label task's own target, so training moves it directly. A sixth one-token branch " (" gives
the letter scorer (argmax of the five letters after "Answer: (", the old distill_sbs metric)
as a side number only: a 135M model does not bind letters to choices (it sat at ~20% chance
in every earlier run), whereas cloze scoring reads what it knows. Also returned per question:
the gold choice's log-prob and its margin over the best wrong choice (lower-noise signals).

Student (`Kit`, `Kit.student()`): SmolLM2-135M-Instruct (params.yaml synthesize.teacher), all
30 blocks. The bottom `cache_at` blocks are frozen and their output (the residual stream
entering block `cache_at`) is computed once per distinct token sequence and cached (in memory
and in `cache_file`, reused across arms, seeds and runs); training and scoring run only the
blocks above. Of those, the top `train_top` blocks and the final norm are trained; the tied
embedding / head stays frozen. The student is a plain LlamaForCausalLM whose `.model` (its
`base_model`) is `CachedTop`, so steps go through the stage's loop `tasks.distill.train`
unchanged: cross-entropy on the assistant tokens, (1 - a) L_label + a L_rationale per step,
its warmup + linear-decay schedule, its seeded draws. The cached path equals the uncached
one up to bf16 kernel order (checked by `check_cache`, run by tests/test_bench_cqa.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from tasks import models
from tasks import student as st
from tasks.distillation.examples import LABEL, RATIONALE, TAGS, Example
from tasks.distillation.forward import autocast
from tasks.params import load_params
from tasks.teachers.replay import load_step_by_step

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STILLHOUSE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "distill_step_by_step"
LETTERS = "abcde"
ANSWER = "Answer:"
WH = ("what", "where", "why", "how", "who", "when", "which")
CACHE = Path(os.environ.get("STILLHOUSE_CQA_CACHE", "/tmp/stillhouse-cqa-cache"))


# ---------------------------------------------------------------------------------------------
# Data


def rationale_text(output: str) -> str:
    """PaLM's reasoning without its closing "So the answer is (x) ..." (the paper's rationale)."""
    return re.split(r"\s*[Ss]o the answer is", output, maxsplit=1)[0].strip()


def qtype(question: str) -> str:
    words = re.findall(r"[a-z]+", question.lower())
    return next((w for w in words if w in WH), "other")


def load_rows(split: str, n: int = 0) -> list[dict]:
    """CQA rows in the synthesize schema: `label` the gold letter (condense's quotas), `answer`
    the gold choice text, `choices`, `groups` {qtype: wh-word}, `rationale` (kept PaLM rationale
    or None), `kept`. n > 0: the first n rows."""
    out = []
    for r in load_step_by_step(DATA, "cqa", split):
        gold = r["choices"].index(r["label"])
        rationale = rationale_text(r["output"]) if r["match"] else ""
        out.append({"id": r["id"], "text": r["text"], "label": LETTERS[gold], "answer": r["label"],
                    "choices": r["choices"], "gold": gold, "groups": {"qtype": qtype(r["text"])},
                    "rationale": rationale or None, "kept": bool(rationale), "teacher_answer": r["answer"],
                    "correct": r["match"]})
    return out[:n] if n else out


class CqaDomain:
    """What ifd and gradmatch read from a domain (tasks.condense.run): the question and the label."""

    name = "cqa"
    labels = None

    @staticmethod
    def question(row: dict) -> str:
        return row["text"]  # the question and its answer choices

    @staticmethod
    def normalize_label(label: str) -> str:
        return label


# ---------------------------------------------------------------------------------------------
# The one prompt format


def prompt_ids(tok, row: dict, task: str = LABEL) -> list[int]:
    return tok(models.chat_prompt(tok, TAGS[task] + row["text"]), add_special_tokens=False)["input_ids"]


def answer_ids(tok, choice: str) -> list[int]:
    """Tokens of "Answer: <choice>" + end-of-turn (the label target)."""
    return tok(f"{ANSWER} {choice}", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def examples(tok, rows: list[dict], rationale_tokens: int = 64) -> dict[str, list[Example]]:
    """The two distill pools: a label example per row, a rationale example per kept rationale."""
    pools: dict[str, list[Example]] = {LABEL: [], RATIONALE: []}
    for r in rows:
        pools[LABEL].append(Example(LABEL, r["id"], prompt_ids(tok, r, LABEL), answer_ids(tok, r["answer"])))
        if r.get("rationale"):
            target = tok(r["rationale"], add_special_tokens=False)["input_ids"][:rationale_tokens]
            pools[RATIONALE].append(Example(RATIONALE, r["id"], prompt_ids(tok, r, RATIONALE), target + [tok.eos_token_id]))
    return pools


# ---------------------------------------------------------------------------------------------
# The student: frozen cached bottom, trained top


def _key(ids, tag: str = "") -> bytes:
    return hashlib.blake2b(tag.encode() + np.asarray(ids, dtype=np.int32).tobytes(), digest_size=16).digest()


class CachedTop(torch.nn.Module):
    """Stands in for the student's LlamaModel: input_ids -> cached bottom states -> top blocks."""

    def __init__(self, top, kit: "Kit"):
        super().__init__()
        self.top = top  # LlamaModel holding blocks cache_at..29 and the final norm
        self.kit = kit  # a plain attribute, not a submodule: its bottom is never trained

    def get_input_embeddings(self):  # transformers' get_output_embeddings asks for it
        return self.top.embed_tokens

    def forward(self, input_ids=None, attention_mask=None, output_hidden_states=False, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lens = attention_mask.sum(1).tolist()
        seqs = [input_ids[b, :n].tolist() for b, n in enumerate(lens)]  # right padding (collate)
        states = self.kit.bottom_states(seqs)
        h = torch.zeros(len(seqs), input_ids.shape[1], states[0].shape[-1])
        for b, s in enumerate(states):
            h[b, : len(s)] = s
        return self.top(inputs_embeds=h, attention_mask=attention_mask, output_hidden_states=output_hidden_states)


class Kit:
    """Tokenizer, frozen bottom blocks with their state cache, and fresh students (see module doc)."""

    def __init__(self, cache_at: int = 24, train_top: int = 2, cache_file: str | Path | None = "default",
                 batch_size: int = 16, model: str | None = None, device: str = "cpu"):
        self.path = models.resolve_model(model or load_params(ROOT / "params.yaml").synthesize.teacher)
        self.tok = models.load_tokenizer(self.path)
        self.device = torch.device(device)
        self.base = models.load_causal_lm(self.path, "float32", "cpu")
        self.base.eval()
        n = self.base.config.num_hidden_layers
        if not 0 < train_top <= n - cache_at:
            raise ValueError(f"cqa: train_top {train_top} must be in 1..{n - cache_at} (blocks above cache_at {cache_at})")
        if cache_at and self.device.type != "cpu":
            raise ValueError("cqa: the bottom-state cache runs on the CPU; use cache_at 0 on another device")
        self.cache_at, self.train_top, self.n_layers, self.batch_size = cache_at, train_top, n, batch_size
        if cache_at == 0:  # no cache: plain students (the whole student trained when train_top = n)
            cache_file = None
        else:
            self.bottom = st.drop_layers(self.base, list(range(cache_at))).model
            self.bottom.norm = torch.nn.Identity()  # the residual stream entering block cache_at, un-normed
            for p in self.bottom.parameters():
                p.requires_grad = False
            self.bottom.eval()
            self.kv_name = models.kv_cache_name(self.bottom)
        if cache_file == "default":
            cache_file = CACHE / f"{Path(self.path).name}-bottom{cache_at}.pt"
        self.cache_file = Path(cache_file) if cache_file else None
        self.cache: dict[bytes, torch.Tensor] = {}
        for f in self.cache_files():  # the main file and the shards `warm` writes
            self.cache.update(torch.load(f, weights_only=True))
        self.loaded = len(self.cache)
        self.encoded_tokens = 0  # tokens pushed through the bottom by this process (the cache's cost)
        self.encode_seconds = 0.0
        self.letter_ids = [self.tok(f"{ANSWER} ({c}", add_special_tokens=False)["input_ids"][-1] for c in LETTERS]
        assert len(set(self.letter_ids)) == 5, self.letter_ids
        self.answer_prefix = self.tok(ANSWER, add_special_tokens=False)["input_ids"]
        self.open_paren = self.tok(f"{ANSWER} (", add_special_tokens=False)["input_ids"][len(self.answer_prefix):]
        a, b = (prompt_ids(self.tok, {"text": "x"}, task) for task in (LABEL, RATIONALE))
        n = next(i for i in range(min(len(a), len(b))) if a[i] != b[i])
        self.prefix_ids = a[: n - 1]  # the chat header both tasks share, one token of slack for BPE merges
        self._prefix_state = None

    # -- the cache -----------------------------------------------------------------------------

    @torch.no_grad()
    def _prefix(self, n: int):
        """The bottom's output `(P, H)` and key/value cache of the chat header every prompt starts with
        (computed once: the system turn is ~25 of ~100 tokens per example)."""
        if self._prefix_state is None:
            with autocast("cpu"):
                out = self.bottom(input_ids=torch.tensor([self.prefix_ids]), use_cache=True)
            self._prefix_state = (out[0][0].float(), models.kv_cache_of(out))
        h, past = self._prefix_state
        cache = DynamicCache()
        for i, layer in enumerate(past.layers):
            cache.update(layer.keys.expand(n, -1, -1, -1).contiguous(), layer.values.expand(n, -1, -1, -1).contiguous(), i)
        return h, cache

    @torch.no_grad()
    def _encode(self, batch: list[tuple[bytes, list[int], torch.Tensor | None, torch.Tensor | None]]) -> None:
        """Bottom states of `batch` [(key, ids, 4D mask or None, positions or None)] into the cache;
        the shared chat header comes from its key/value cache when every row starts with it."""
        t0 = time.perf_counter()
        P = len(self.prefix_ids) if all(s[: len(self.prefix_ids)] == self.prefix_ids for _, s, _, _ in batch) else 0
        width = max(len(ids) for _, ids, _, _ in batch) - P
        ids = torch.full((len(batch), width), self.tok.pad_token_id)
        for b, (_, s, _, _) in enumerate(batch):
            ids[b, : len(s) - P] = torch.tensor(s[P:])
        if batch[0][2] is None:  # plain causal rows, right padded
            mask = torch.zeros(len(batch), P + width, dtype=torch.long)
            for b, (_, s, _, _) in enumerate(batch):
                mask[b, : len(s)] = 1
            pos = torch.arange(P, P + width).expand(len(batch), -1)
        else:  # packed rows: their own 4D masks and position ids
            mask = torch.zeros(len(batch), 1, width, P + width, dtype=torch.bool)
            mask[:, 0, :, P:] = torch.eye(width, dtype=torch.bool)
            pos = torch.zeros_like(ids)
            for b, (_, s, m, p) in enumerate(batch):
                mask[b, 0, : len(s) - P, : len(s)] = m[P:]
                pos[b, : len(s) - P] = p[P:]
        kwargs = {}
        if P:
            h_pre, cache = self._prefix(len(batch))
            kwargs = {self.kv_name: cache}
        with autocast("cpu"):
            h = self.bottom(input_ids=ids, attention_mask=mask, position_ids=pos, **kwargs)[0].float()
        for b, (k, s, _, _) in enumerate(batch):
            self.cache[k] = torch.cat([h_pre, h[b, : len(s) - P]]) if P else h[b, : len(s)].clone()
        self.encoded_tokens += sum(len(s) - P for _, s, _, _ in batch)
        self.encode_seconds += time.perf_counter() - t0

    def bottom_states(self, seqs: list[list[int]], packed: list | None = None, progress: bool = False) -> list[torch.Tensor]:
        """The cached bottom output `(len, H)` per sequence; missing ones computed in batches.
        packed: per sequence (mask (L, L) bool, position ids (L,)) for packed scoring rows."""
        keys = [_key(s, "packed" if packed else "") for s in seqs]
        todo = sorted({k: i for i, k in enumerate(keys) if k not in self.cache}.values(), key=lambda i: len(seqs[i]))
        bar = tqdm(total=len(todo), desc=f"cache bottom {self.cache_at} blocks", unit="seq", disable=not progress or not todo)
        for s in range(0, len(todo), self.batch_size):
            idx = todo[s : s + self.batch_size]
            self._encode([(keys[i], seqs[i], *(packed[i] if packed else (None, None))) for i in idx])
            bar.update(len(idx))
        bar.close()
        return [self.cache[k] for k in keys]

    def cache_files(self) -> list[Path]:
        if self.cache_file is None:
            return []
        shards = sorted(self.cache_file.parent.glob(f"{self.cache_file.stem}.shard*.pt"))
        return ([self.cache_file] if self.cache_file.exists() else []) + shards

    def save_cache(self) -> None:
        if self.cache_file is not None and len(self.cache) > self.loaded:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_suffix(f".{os.getpid()}.tmp")  # two benches may save at once
            torch.save(self.cache, tmp)
            tmp.replace(self.cache_file)
            self.loaded = len(self.cache)

    # -- students ------------------------------------------------------------------------------

    def student(self):
        """A fresh student: blocks cache_at..29 over the cached bottom; the top train_top blocks and
        the final norm trainable (float32), everything else frozen."""
        model = st.drop_layers(self.base, list(range(self.cache_at, self.n_layers))).float()
        whole = self.train_top == self.n_layers  # the whole student: embedding (tied head) too
        for p in model.parameters():
            p.requires_grad = whole
        layers = model.model.layers
        for block in list(layers)[len(layers) - self.train_top :]:
            for p in block.parameters():
                p.requires_grad = True
        for p in model.model.norm.parameters():
            p.requires_grad = True
        if self.cache_at:
            model.model = CachedTop(model.model, self)
        return model.to(self.device)

    def describe(self) -> str:
        first_trained = self.n_layers - self.train_top
        if self.cache_at == 0:
            trained = "all blocks, embedding (tied head) and final norm" if first_trained == 0 else \
                f"0-{first_trained - 1} frozen, {first_trained}-{self.n_layers - 1} + final norm"
            return f"{Path(self.path).name}, {self.n_layers} blocks, no cache: {trained} trained, on {self.device}"
        middle = f"{self.cache_at}-{first_trained - 1} frozen, " if first_trained > self.cache_at else ""
        return (f"{Path(self.path).name}, {self.n_layers} blocks: 0-{self.cache_at - 1} frozen + cached, {middle}"
                f"{first_trained}-{self.n_layers - 1} + final norm trained, tied head frozen")

    # -- the one scorer ------------------------------------------------------------------------

    def packed(self, row: dict) -> tuple[list[int], torch.Tensor, torch.Tensor, list[tuple[int, list[int]]]]:
        """One question's packed scoring row: ids, 4D mask (L, L), positions, and per branch
        (start, tokens); branches 0-4 the choices, 5 the letter branch " (". """
        head = prompt_ids(self.tok, row, LABEL) + self.answer_prefix
        branches = []
        for c in row["choices"]:
            full = answer_ids(self.tok, c)
            assert full[: len(self.answer_prefix)] == self.answer_prefix, (c, full)
            branches.append(full[len(self.answer_prefix):])
        branches.append(self.open_paren)
        ids, pos, spans = list(head), list(range(len(head))), []
        for b in branches:
            spans.append((len(ids), b))
            ids += b
            pos += range(len(head), len(head) + len(b))
        n = len(ids)
        mask = torch.zeros(n, n, dtype=torch.bool)
        mask[:, : len(head)] = torch.tril(torch.ones(n, len(head), dtype=torch.bool))  # causal over the prompt
        for start, b in spans:
            mask[start : start + len(b), start : start + len(b)] = torch.tril(torch.ones(len(b), len(b), dtype=torch.bool))
        return ids, mask, torch.tensor(pos), spans

    @torch.no_grad()
    def score(self, model, rows: list[dict], batch_size: int = 16, desc: str = "score") -> dict[str, np.ndarray]:
        """Per question: `correct` (cloze argmax == gold), `letter_correct`, `gold_logprob`,
        `margin` (gold minus best wrong choice), `choice_logprob` (n, 5). `model` a Kit student."""
        cached = isinstance(model.model, CachedTop)
        top = model.model.top if cached else model.model
        device = next(model.parameters()).device
        weight = model.get_output_embeddings().weight.float()
        packs = [self.packed(r) for r in rows]
        n = len(rows)
        choice_lp = np.zeros((n, 5))
        letter_pick = np.zeros(n, dtype=int)
        order = sorted(range(n), key=lambda i: len(packs[i][0]))
        model.eval()
        for s in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False):
            idx = order[s : s + batch_size]
            seqs = [packs[i][0] for i in idx]
            width = max(map(len, seqs))
            mask = torch.eye(width, dtype=torch.bool).repeat(len(idx), 1, 1, 1)
            pos = torch.zeros(len(idx), width, dtype=torch.long)
            for b, i in enumerate(idx):
                L = len(seqs[b])
                mask[b, 0, :L, :L], pos[b, :L] = packs[i][1], packs[i][2]
            if cached:
                states = self.bottom_states(seqs, [(packs[i][1], packs[i][2]) for i in idx])
                inputs = {"inputs_embeds": torch.zeros(len(idx), width, states[0].shape[-1])}
                for b, state in enumerate(states):
                    inputs["inputs_embeds"][b, : len(state)] = state
            else:
                inputs = {"input_ids": torch.full((len(idx), width), self.tok.pad_token_id)}
                for b, seq in enumerate(seqs):
                    inputs["input_ids"][b, : len(seq)] = torch.tensor(seq)
            inputs = {k: v.to(device) for k, v in inputs.items()}
            with autocast(device):
                out = top(**inputs, attention_mask=mask.to(device), position_ids=pos.to(device))[0].float()
            for b, i in enumerate(idx):
                spans = packs[i][3]
                head_end = spans[0][0] - 1  # the last prompt token predicts every branch's first token
                for j, (start, toks) in enumerate(spans):
                    at = [head_end] + list(range(start, start + len(toks) - 1))
                    logp = torch.log_softmax(out[b, at] @ weight.T, -1)
                    if j < 5:
                        choice_lp[i, j] = float(logp[torch.arange(len(toks)), torch.tensor(toks, device=device)].sum())
                    else:
                        letter_pick[i] = int(torch.log_softmax(out[b, start + len(toks) - 1] @ weight.T, -1)[self.letter_ids].argmax())
        gold = np.array([r["gold"] for r in rows])
        gold_lp = choice_lp[np.arange(n), gold]
        wrong = choice_lp.copy()
        wrong[np.arange(n), gold] = -np.inf
        return {"correct": (choice_lp.argmax(1) == gold).astype(np.int8), "letter_correct": (letter_pick == gold).astype(np.int8),
                "gold_logprob": gold_lp, "margin": gold_lp - wrong.max(1), "choice_logprob": choice_lp}


# ---------------------------------------------------------------------------------------------
# Statistics


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% CI of mean(b - a); a, b `(n_q,)` or `(seeds, n_q)` paired by question. Resamples
    questions (columns), so the seeds of one question stay together."""
    d = np.atleast_2d(b.astype(float) - a.astype(float))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.shape[1], (n, d.shape[1]))
    means = d.mean(0)[idx].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def bits(correct: np.ndarray) -> str:
    """Per-question results as one "0"/"1" string (1,221 characters for all of CQA's test set),
    kept in result files so later runs and analyses can pair them by question."""
    return "".join("1" if c else "0" for c in correct)


def unbits(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8) == ord("1")


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def check_cache(kit: Kit, rows: list[dict]) -> dict:
    """Max |difference| of (a) the cached student vs the full model on label examples' assistant
    hidden states and (b) packed cloze scores vs each choice scored in its own sequence."""
    from tasks.distillation.examples import collate
    from tasks.distillation.forward import assistant_hidden

    pools = examples(kit.tok, rows)
    batch = collate(pools[LABEL], kit.tok.pad_token_id, "cpu")
    student = kit.student()
    with torch.no_grad():
        h_cached = assistant_hidden(student, batch)[0]
        h_full = assistant_hidden(kit.base, batch)[0]
    packed = kit.score(student, rows)["choice_logprob"]
    single = np.zeros_like(packed)
    w = kit.base.get_output_embeddings().weight.float()
    with torch.no_grad():
        for i, r in enumerate(rows):
            p = prompt_ids(kit.tok, r, LABEL)
            for j, c in enumerate(r["choices"]):
                t = answer_ids(kit.tok, c)
                ids = torch.tensor([p + t])
                with autocast("cpu"):
                    out = kit.base.model(input_ids=ids)[0][0].float()
                n_pre = len(p) + len(kit.answer_prefix)
                logp = torch.log_softmax(out[n_pre - 1 : len(p) + len(t) - 1] @ w.T, -1)
                single[i, j] = float(logp[torch.arange(len(t) - len(kit.answer_prefix)), torch.tensor(t[len(kit.answer_prefix):])].sum())
    return {"hidden_max_abs": float((h_cached - h_full).abs().max()), "hidden_scale": float(h_full.abs().mean()),
            "score_max_abs": float(np.abs(packed - single).max()), "same_argmax": bool((packed.argmax(1) == single.argmax(1)).all())}


# ---------------------------------------------------------------------------------------------
# Pilot: does a configuration learn CQA at all?


def distill_params(steps: int, inputs: int, lr: float, rationale_weight: float, seed: int, rationale: bool = True):
    """The Distill params of a CQA arm: CE only (the teacher is PaLM text, not logits), the
    stage's schedule, no checkpoints. `inputs` questions per step. With rationales a step is the
    paper's multi-task step: every input gives a label AND a rationale example (Hsieh et al.,
    Sec. 3.2), so the batch holds `inputs` of each and label-only vs label + rationale compares
    equal steps over equal label examples. (The stage draws the two pools independently, so
    the rationale examples come from other questions than the step's labels.)"""
    from tasks.params import Distill

    return Distill(steps=steps, batch_size=inputs * (2 if rationale else 1), lr=lr, kd_weight=0.0, ce_weight=1.0,
                   rationale_weight=rationale_weight if rationale else 0.0, seed=seed, max_length=256, checkpoint_every=0)


def drawn(pools: dict[str, list[Example]], params) -> list[list[int]]:
    """The token sequences `tasks.distill.train` will draw for these pools and params (its
    Draws order and per-step split), to put into the cache before training."""
    from tasks.distillation.examples import Draws
    from tasks.distillation.trainer import step_split

    n_label, n_rationale = step_split(params.batch_size, bool(pools[RATIONALE]) and params.rationale_weight > 0)
    counts = {LABEL: n_label * params.steps, RATIONALE: n_rationale * params.steps}
    seqs = []
    for task, n in counts.items():
        draws = Draws(len(pools[task]), params.seed, task) if n else None
        seqs += [pools[task][i].prompt_ids + pools[task][i].target_ids for i in (draws.next() for _ in range(n))]
    return seqs


def main() -> None:
    """`python bench/cqa.py --steps 60 --train-top 2` : accuracy at init and after training on all
    train rows (label + rationale), with the paired bootstrap CI of the gain."""
    import argparse
    import json

    from tasks import distill as ds

    ap = argparse.ArgumentParser(description="CQA pilot: does the student learn?")
    ap.add_argument("--cache-at", type=int, default=24)
    ap.add_argument("--train-top", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--rationale-weight", type=float, default=0.5)
    ap.add_argument("--rationale-tokens", type=int, default=64)
    ap.add_argument("--n-test", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    t0 = time.perf_counter()
    kit = Kit(args.cache_at, args.train_top)
    train_rows, test_rows = load_rows("train"), load_rows("test", args.n_test)
    print(f"{kit.describe()}; cache {kit.loaded} sequences loaded; load {loadavg()}", flush=True)
    init = kit.score(kit.student(), test_rows, desc="score init")
    kit.save_cache()
    student = kit.student()
    t1 = time.perf_counter()
    params = distill_params(args.steps, args.batch_size, args.lr, args.rationale_weight, args.seed)
    history = ds.train(student, None, examples(kit.tok, train_rows, args.rationale_tokens), params, kit.tok.pad_token_id)
    train_s = time.perf_counter() - t1
    after = kit.score(student, test_rows, desc="score trained")
    kit.save_cache()
    lo, hi = paired_bootstrap(init["correct"], after["correct"])
    res = {"args": vars(args), "init": float(init["correct"].mean()), "init_letter": float(init["letter_correct"].mean()),
           "after": float(after["correct"].mean()), "after_letter": float(after["letter_correct"].mean()),
           "gain_ci95": [lo, hi], "init_gold_logprob": float(init["gold_logprob"].mean()),
           "after_gold_logprob": float(after["gold_logprob"].mean()), "init_margin": float(init["margin"].mean()),
           "after_margin": float(after["margin"].mean()), "train_seconds": round(train_s, 1),
           "encoded_tokens": kit.encoded_tokens, "encode_seconds": round(kit.encode_seconds, 1),
           "label_loss_first_last10": [float(np.mean([h["label_loss"] for h in history[:10]])),
                                       float(np.mean([h["label_loss"] for h in history[-10:]]))],
           "seconds": round(time.perf_counter() - t0, 1), "load": loadavg()}
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


def warm() -> None:
    """`python bench/cqa.py warm --shard 0/2 --steps 200 ...` (one process per core, then run the
    benches with the same arguments): put every sequence that bench/distill_sbs.py and
    bench/condense.py will draw or score into the bottom-state cache, split into shards, so two
    cores encode each sequence once instead of each bench encoding its own copy."""
    import argparse
    import sys

    sys.path.insert(0, str(ROOT))  # run as a script: make `bench` importable
    from bench import condense

    ap = argparse.ArgumentParser(description=warm.__doc__.split("\n")[0])
    ap.add_argument("warm")
    ap.add_argument("--shard", default="0/1", help="i/n: encode every n-th sequence starting at i")
    ap.add_argument("--cache-at", type=int, default=24)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rationale-tokens", type=int, default=64)
    ap.add_argument("--seeds", default="0", help="training seeds (distill_sbs --seeds, condense --seed)")
    ap.add_argument("--method", default="kcenter")
    ap.add_argument("--ratios", default="0.1")
    ap.add_argument("--random-seeds", default="0")
    ap.add_argument("--n-test", type=int, default=0)
    args = ap.parse_args()
    i, n = (int(x) for x in args.shard.split("/"))
    kit = Kit(args.cache_at, 1)
    train_rows, test_rows = load_rows("train"), load_rows("test", args.n_test)
    pools = examples(kit.tok, train_rows, args.rationale_tokens)
    seqs: dict[bytes, tuple] = {}
    for r in test_rows:
        ids, mask, pos, _ = kit.packed(r)
        seqs[_key(ids, "packed")] = (ids, (mask, pos))
    for seed in [int(x) for x in args.seeds.split(",")]:
        arms = [(pools, True, seed), ({LABEL: pools[LABEL], RATIONALE: []}, False, seed)]
        arms += [(examples(kit.tok, rows, args.rationale_tokens), True, extra.get("train_seed", seed))  # "m/t1": seed 1
                 for _, _, rows, extra in condense.subsets(train_rows, args.method, args.ratios, args.random_seeds)]
        for arm_pools, rat, arm_seed in arms:
            for ids in drawn(arm_pools, distill_params(args.steps, args.batch, 1e-4, 0.5, arm_seed, rat)):
                seqs[_key(ids)] = (ids, None)
    todo = sorted((k for k in seqs if k not in kit.cache), key=lambda k: len(seqs[k][0]))[i::n]
    shard = kit.cache_file.with_name(f"{kit.cache_file.stem}.shard{i}of{n}.pt")
    print(f"warm: {len(seqs)} sequences, {len(kit.cache)} cached, shard {i}/{n}: {len(todo)} "
          f"({sum(len(seqs[k][0]) for k in todo)} tokens) -> {shard}; load {loadavg()}", flush=True)
    kit.cache = torch.load(shard, weights_only=True) if shard.exists() else {}  # this process writes only its shard
    kit.cache_file, kit.loaded = shard, len(kit.cache)
    for packed in (True, False):
        part = [k for k in todo if (seqs[k][1] is not None) == packed]
        for s in tqdm(range(0, len(part), 512), desc=f"warm {'test' if packed else 'train'}", unit="x512"):
            keys = part[s : s + 512]
            kit.bottom_states([seqs[k][0] for k in keys], [seqs[k][1] for k in keys] if packed else None)
            if s % 2048 == 0 or s + 512 >= len(part):
                kit.save_cache()  # a cut-off warm keeps most of what it encoded; not every chunk (the file grows)
    print(f"warm: shard {i}/{n} done, {kit.encoded_tokens} tokens in {kit.encode_seconds:.0f} s; load {loadavg()}")


if __name__ == "__main__":
    import sys

    warm() if sys.argv[1:2] == ["warm"] else main()
