"""Records -> the two tasks of distilling step-by-step (Hsieh et al., 2023, arXiv:2305.02301):
"[label]" -> answer and "[rationale]" -> rationale examples, with the teacher's stored top-k
aligned to the target tokens (sparse KD); padded batches and the seeded draw order."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from domains.base import Domain
from tasks import models

LABEL, RATIONALE = "label", "rationale"
TASKS = (LABEL, RATIONALE)  # task flag 0, 1 in batches
TAGS = {LABEL: "[label] ", RATIONALE: "[rationale] "}  # task prefixes of the user turn
ANSWER = "Answer:"  # the label task's answer prefix, what domain.parse_answer reads
HEAD_TOKENS = 32  # a too-long prompt keeps its first 32 tokens (chat header) and its tail
TOPK_MIN_MATCH = 0.9  # share of a teacher output's tokens that must lie in their stored top-k


@dataclass
class Example:
    task: str  # LABEL or RATIONALE
    record_id: str
    prompt_ids: list[int]
    target_ids: list[int]  # the assistant's tokens, end-of-turn token last
    # Offline KD targets: (ids, logprobs), entry j = the teacher's top-k at the position that
    # predicts target_ids[j]; shorter than target_ids (or None): the rest gets no KD term.
    teacher_topk: tuple[list[list[int]], list[list[float]]] | None = None

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.target_ids)


def gold_label(domain: Domain, record: dict) -> str:
    """The record's label in the canonical form `parse_answer` returns."""
    label = domain.normalize_label(str(record["label"]))
    return label if label is not None else str(record["label"])


def task_prompt(domain: Domain, tok, record: dict, task: str = LABEL) -> str:
    """The chat-formatted user turn of `task` for a record, ready for the assistant's reply."""
    return models.chat_prompt(tok, TAGS[task] + domain.question(record))


def make_example(domain: Domain, tok, record: dict, task: str, max_length: int) -> tuple[Example, bool]:
    """One training example and whether its prompt was cut to fit `max_length` tokens."""
    target = f"{ANSWER} {gold_label(domain, record)}" if task == LABEL else record["rationale"].strip()
    prompt_ids = tok(task_prompt(domain, tok, record, task), add_special_tokens=False)["input_ids"]
    target_ids = tok(target, add_special_tokens=False)["input_ids"][: max_length // 2 - 1] + [tok.eos_token_id]
    budget = max_length - len(target_ids)
    cut = len(prompt_ids) > budget
    if cut:  # keep the chat header and the tail (the question and the assistant header)
        head = min(HEAD_TOKENS, budget // 4)
        prompt_ids = prompt_ids[:head] + prompt_ids[len(prompt_ids) - (budget - head) :]
    example = Example(task, str(record["id"]), prompt_ids, target_ids)
    if record.get("teacher_topk") and record.get("teacher_output"):
        example.teacher_topk = align_topk(tok, record["teacher_output"], record["teacher_topk"], target_ids, task)
    return example, cut


def align_topk(tok, output: str, topk: dict, target_ids: list[int], task: str):
    """The stored top-k of the teacher's output tokens that the target's tokens reproduce, or None.

    synthesize stores one top-k per generated token of `output`, after the prompt the teacher
    saw. The rationale target is a prefix of `output` (matched from the start), the label target
    "Answer: <label>" its suffix (matched from the end). Re-tokenising the decoded text gives
    the generated tokens back in nearly every case; the check that >= TOPK_MIN_MATCH of them lie
    in their own stored top-k rejects rows where it does not (or where stripping shifted them).
    """
    ids, logprobs = topk["ids"], topk["logprobs"]
    out = tok(output, add_special_tokens=False)["input_ids"]
    shift = len(ids) - len(out)  # >0: leading whitespace tokens were stripped from the decoded text
    if shift < 0 or not out:
        return None
    if sum(t in ids[j + shift] for j, t in enumerate(out)) < TOPK_MIN_MATCH * len(out):
        return None
    target = target_ids[:-1]  # the end-of-turn token has no stored distribution here
    if task == RATIONALE:
        n = 0
        while n < min(len(target), len(out)) and target[n] == out[n]:
            n += 1
        return (ids[shift : shift + n], logprobs[shift : shift + n]) if n else None
    if len(target) <= len(out) and out[len(out) - len(target) :] == target:
        return ids[len(ids) - len(target) :], logprobs[len(ids) - len(target) :]
    return None


def build_examples(domain: Domain, tok, rows: list[dict], max_length: int) -> tuple[dict[str, list[Example]], int]:
    """Label examples for every row, rationale examples for rows with one; and the cut count."""
    pools: dict[str, list[Example]] = {LABEL: [], RATIONALE: []}
    cut = 0
    for row in rows:
        for task in TASKS:
            if task == RATIONALE and not (row.get("rationale") or "").strip():
                continue
            example, was_cut = make_example(domain, tok, row, task, max_length)
            pools[task].append(example)
            cut += was_cut
    return pools, cut


def collate(examples: list[Example], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-padded `input_ids`, `attention_mask` and `target_mask` `(B, L)`; `task` `(B,)`.

    target_mask[b, t] = 1 where token t of row b is an assistant token (what the loss scores).
    """
    width = max(e.length for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    target = torch.zeros_like(ids)
    for b, e in enumerate(examples):
        p, t = len(e.prompt_ids), len(e.target_ids)
        ids[b, : p + t] = torch.tensor(e.prompt_ids + e.target_ids)
        attention[b, : p + t] = 1
        target[b, p : p + t] = 1
    task = torch.tensor([e.task == RATIONALE for e in examples], dtype=torch.long)
    return {"input_ids": ids.to(device), "attention_mask": attention.to(device), "target_mask": target.to(device),
            "task": task.to(device)}


class Draws:
    """Endless shuffled passes over a pool of `n`; the pass order comes from (seed, name, pass),
    so the whole state is two integers a checkpoint can hold."""

    def __init__(self, n: int, seed: int, name: str):
        self.n, self.seed, self.name = n, seed, name
        self.epoch, self.pos, self._order = 0, 0, None

    def next(self) -> int:
        if self._order is None:
            self._order = list(range(self.n))
            random.Random(f"{self.seed}:{self.name}:{self.epoch}").shuffle(self._order)
        i = self._order[self.pos]
        self.pos += 1
        if self.pos == self.n:
            self.epoch, self.pos, self._order = self.epoch + 1, 0, None
        return i

    def state(self) -> tuple[int, int]:
        return self.epoch, self.pos

    def load(self, state) -> None:
        self.epoch, self.pos = state
        self._order = None
