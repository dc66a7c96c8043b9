"""A teacher behind an OpenAI-compatible chat-completions server (vLLM, TGI, Ollama, OpenAI).

    teachers: [{kind: http, base_url: "http://127.0.0.1:8000/v1", model: qwen2.5-72b,
                api_key_env: TEACHER_API_KEY}]

POST `<base_url>/chat/completions` with one user message per record, `n` samples,
`temperature`, `max_tokens`, `seed`, and (with `logprobs: true`) `logprobs` / `top_logprobs`.
Up to `concurrency` requests are in flight (a thread pool over one httpx client). 429, 5xx,
timeouts and connection errors are retried `retries` times with exponential backoff and
jitter, waiting at least the server's `Retry-After`; any other 4xx fails at once with the
status and the start of the body. The key is read from the env var named by `api_key_env`
and never written anywhere.

Confidence from `logprobs`: the sampled tokens' log-probs are exact; the entropy is over the
returned `top_logprobs` only (a lower bound of the real one), renormalized.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tasks.teachers.base import Options, Result, TeacherError

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
BACKOFF_S, BACKOFF_MAX_S = 0.5, 30.0
ANSWER = "Answer:"


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", 0)))
    except ValueError:  # an HTTP date: not worth parsing, back off normally
        return 0.0


def _confidence(logprobs: dict | None) -> dict:
    """logprob, entropy (over top_logprobs) and answer_logprob from a choice's `logprobs.content`."""
    content = (logprobs or {}).get("content") or []
    if not content:
        return {}
    lps = [float(t["logprob"]) for t in content]
    entropies = []
    for t in content:
        top = [math.exp(float(x["logprob"])) for x in t.get("top_logprobs") or []]
        if top:
            z = sum(top)
            entropies.append(-sum(p / z * math.log(p / z) for p in top if p > 0))
    text = "".join(t["token"] for t in content)
    pos, answer = text.rfind(ANSWER), None
    if pos >= 0:
        end, seen = pos + len(ANSWER), 0
        for j, t in enumerate(content):
            seen += len(t["token"])
            if seen >= end:
                answer = round(sum(lps[j + 1 :]), 4) if j + 1 < len(lps) else None
                break
    return {"logprob": round(sum(lps), 4), "entropy": round(sum(entropies) / len(entropies), 4) if entropies else None,
            "answer_logprob": answer}


class HTTPTeacher:
    kind = "http"

    def __init__(self, base_url: str, model: str, *, name: str | None = None, api_key_env: str | None = None,
                 logprobs: bool = False, concurrency: int = 8, retries: int = 5, timeout: float = 120.0,
                 batch_size: int = 32):
        self.base_url, self.model, self.name = base_url.rstrip("/"), model, name or f"{model}@{base_url}"
        self.logprobs, self.concurrency, self.retries = logprobs, concurrency, retries
        self.batch_size, self.max_batch_tokens = batch_size, None
        headers = {"Content-Type": "application/json"}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise TeacherError(f"teacher {self.name}: env var {api_key_env} (api_key_env) is not set")
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                   limits=httpx.Limits(max_connections=concurrency))
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="teacher-http")
        self.calls = {"requests": 0, "retries": 0, "retried_by_cause": {}}  # for the stage report
        self._lock = threading.Lock()

    def _count(self, key: str, status: int | None = None) -> None:
        with self._lock:
            self.calls[key] += 1
            if key == "retries":  # by cause: an HTTP status, or "timeout/transport"
                codes = self.calls["retried_by_cause"]
                cause = str(status) if status is not None else "timeout/transport"
                codes[cause] = codes.get(cause, 0) + 1

    def fingerprint(self) -> str:
        return f"http:{self.base_url}:{self.model}"  # servers don't expose their weights' hash

    def settings(self, opts: Options) -> dict:
        return {"backend": self.kind, "max_new_tokens": opts.max_new_tokens, "n": opts.n,
                "temperature": opts.temperature, "seed": opts.seed, "logprobs": self.logprobs}

    def prompt(self, user: str) -> str:
        return json.dumps([{"role": "user", "content": user}], ensure_ascii=False)

    def tokens(self, prompt: str) -> int:
        return len(prompt) // 4  # only orders requests; the server counts the real tokens

    def body(self, prompt: str, opts: Options) -> dict:
        body = {"model": self.model, "messages": json.loads(prompt), "max_tokens": opts.max_new_tokens,
                "temperature": opts.temperature, "n": opts.n, "seed": opts.seed}
        if self.logprobs and opts.scores:
            body |= {"logprobs": True, "top_logprobs": max(1, min(opts.topk, 20)) if opts.topk else 5}
        return body

    def _post(self, body: dict) -> dict:
        last = ""
        for attempt in range(self.retries + 1):
            wait = min(BACKOFF_MAX_S, BACKOFF_S * 2**attempt) * (0.5 + random.random() / 2)
            status = None
            try:
                self._count("requests")
                response = self.client.post("/chat/completions", json=body)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last = f"{type(e).__name__}: {e}"
            else:
                status = response.status_code
                if status == 200:
                    try:
                        return response.json()
                    except json.JSONDecodeError:
                        last = f"200 with a body that is not JSON: {response.text[:200]!r}"
                elif status in RETRY_STATUS:
                    last = f"HTTP {status}: {response.text[:200]}"
                    wait = max(wait, _retry_after(response))
                else:
                    raise TeacherError(f"teacher {self.name}: HTTP {status} from "
                                       f"{self.base_url}/chat/completions: {response.text[:300]}")
            if attempt < self.retries:
                self._count("retries", status)
                time.sleep(wait)
        raise TeacherError(f"teacher {self.name}: gave up after {self.retries + 1} attempts; last: {last}")

    def _one(self, prompt: str, opts: Options) -> Result:
        data = self._post(self.body(prompt, opts))
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        if not choices:
            raise TeacherError(f"teacher {self.name}: response without choices: {str(data)[:300]}")
        usage = data.get("usage") or {}
        per_choice = int(usage.get("completion_tokens", 0)) // len(choices)
        samples = []
        for c in choices:
            text = ((c.get("message") or {}).get("content") or "").strip()
            samples.append({"text": text, "completion_tokens": per_choice, **_confidence(c.get("logprobs"))})
        return Result(prompt_tokens=int(usage.get("prompt_tokens", 0)), samples=samples)

    def generate(self, requests: list[tuple[str, str]], opts: Options) -> list[Result]:
        """All requests of the batch run to the end; a failure raises with the others' results attached."""
        futures = [self.pool.submit(self._one, prompt, opts) for _, prompt in requests]
        results, errors = [], []
        for f in futures:
            try:
                results.append(f.result())
            except TeacherError as e:
                results.append(None)
                errors.append(e)
        if errors:
            error = TeacherError(f"{len(errors)} of {len(requests)} requests failed; first: {errors[0]}")
            error.partial = results  # synthesis caches the finished ones before stopping
            raise error
        return results

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()
