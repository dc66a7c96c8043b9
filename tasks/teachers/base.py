"""The teacher interface every backend implements, and the errors it raises.

A teacher turns requests `(record id, user turn)` into `Result`s: the prompt token count and
`n` samples, each `{"text", "completion_tokens"}` plus, when the backend can see token
probabilities, `logprob`, `entropy`, `answer_logprob` and optionally `topk` (see
tasks.models.sample). `prompt(user)` is the exact text the backend sends; synthesis hashes it
to key its resumable cache, so a changed chat template or system prompt misses the cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class TeacherError(RuntimeError):
    """A teacher call that failed for good (bad request, auth, retries exhausted, missing replay).

    `partial`: when set, one Result or None per request of the failed batch (what did finish).
    """

    partial: list | None = None


@dataclass
class Result:
    prompt_tokens: int
    samples: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Options:
    """Generation settings shared by all teachers of one synthesis run."""

    n: int = 1  # samples per request
    temperature: float = 0.0
    max_new_tokens: int = 96
    scores: bool = True  # confidence (log-probs, entropy) where the backend exposes it
    topk: int = 0  # white-box top-k log-probs per token (transformers only)
    seed: int = 0


class Teacher(Protocol):
    name: str  # id in reports and cache keys
    kind: str

    def fingerprint(self) -> str:
        """What identifies the weights / server model / replay file behind `name`."""

    def settings(self, opts: Options) -> dict:
        """Everything besides the prompt that its outputs depend on (part of the cache key)."""

    def prompt(self, user: str) -> str:
        """The exact prompt sent for a user turn."""

    def generate(self, requests: list[tuple[str, str]], opts: Options) -> list[Result]:
        """One Result per `(record id, prompt)` request, in order; raises TeacherError."""

    def close(self) -> None: ...
