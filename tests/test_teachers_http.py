"""The HTTP teacher against a real chat-completions server on 127.0.0.1 (http.server in a thread).

The server answers from the tiny local teacher (or a scripted responder), and injects faults
on request: 429 with Retry-After, 500, and a sleep past the client's timeout. The client must
retry those, fail clearly on anything else, and give the same text the local teacher gives.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import TINY_TEACHER
from test_synthesize import make_project, tiny_params
from domains import get_domain
from tasks import models
from tasks import synthesize as syn
from tasks.params import Params
from tasks.records import read_jsonl
from tasks.teachers import Options, TeacherError
from tasks.teachers.openai_http import HTTPTeacher, _confidence

EDU = get_domain("education")


class TinyTeacher:
    """Chat completions from the tiny GGUF teacher, one request at a time (greedy, float32)."""

    def __init__(self):
        path = models.resolve_model(TINY_TEACHER)
        self.tok, self.model = models.load_tokenizer(path), models.load_causal_lm(path, "float32", "cpu")
        self.lock = threading.Lock()

    def __call__(self, body: dict) -> dict:
        prompt = models.chat_prompt(self.tok, body["messages"][-1]["content"])
        topk = body.get("top_logprobs", 0) if body.get("logprobs") else 0
        with self.lock:
            (out,) = models.sample(self.model, self.tok, [prompt], n=body.get("n", 1), temperature=body["temperature"],
                                   max_new_tokens=body["max_tokens"], topk=topk, progress=False)
        choices = []
        for i, s in enumerate(out["samples"]):
            choice = {"index": i, "message": {"role": "assistant", "content": s["text"]}, "finish_reason": "stop"}
            if topk:  # greedy: the sampled token is the top-1
                decode = lambda t: self.tok.decode([t])  # noqa: E731
                choice["logprobs"] = {"content": [
                    {"token": decode(ids[0]), "logprob": lps[0],
                     "top_logprobs": [{"token": decode(t), "logprob": lp} for t, lp in zip(ids, lps)]}
                    for ids, lps in zip(s["topk"]["ids"], s["topk"]["logprobs"])]}
            choices.append(choice)
        completion = sum(s["completion_tokens"] for s in out["samples"])
        return {"id": "cmpl", "object": "chat.completion", "model": body["model"], "choices": choices,
                "usage": {"prompt_tokens": out["prompt_tokens"], "completion_tokens": completion,
                          "total_tokens": out["prompt_tokens"] + completion}}


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, respond):
        super().__init__(("127.0.0.1", 0), Handler)
        self.respond, self.faults, self.log = respond, [], []  # faults: consumed one per request
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:  # the client timed out and left: what the fault was for
            pass

    def do_POST(self):
        server: ChatServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            self._post(server)
        finally:
            with server.lock:
                server.in_flight -= 1

    def _post(self, server: ChatServer):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
            fault = server.faults.pop(0) if server.faults else None
            server.log.append({"path": self.path, "fault": fault, "auth": self.headers.get("Authorization"),
                               "body": body})
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        if fault == "429":
            return self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": "1"})
        if fault in ("500", "503"):
            return self._send(int(fault), {"error": {"message": "upstream failed"}})
        if fault == "401":
            return self._send(401, {"error": {"message": "invalid api key"}})
        if isinstance(fault, float):  # sleep past the client's timeout, then answer (to nobody)
            time.sleep(fault)
        self._send(200, server.respond(body))


@pytest.fixture(scope="module")
def tiny():
    return TinyTeacher()


def serve(respond):
    server = ChatServer(respond)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def server(tiny):
    server = serve(tiny)
    yield server
    server.shutdown()
    server.server_close()


def prompts(n: int) -> list[tuple[str, str]]:
    from test_synthesize import make_records

    teacher = HTTPTeacher("http://unused", "m")
    return [(r["id"], teacher.prompt(EDU.teacher_prompt(r))) for r in make_records("education", n, "train")]


def test_same_text_as_the_local_teacher_through_429_500_and_a_timeout(server, tiny):
    server.faults = ["429", "500", 6.0]  # the first three requests fail, one way each
    teacher = HTTPTeacher(server.url, "tiny", timeout=4.0, retries=4, concurrency=3)
    requests = prompts(6)
    opts = Options(max_new_tokens=10)
    started = time.perf_counter()
    results = teacher.generate(requests, opts)
    assert time.perf_counter() - started >= 1.0  # the 429's Retry-After: 1 was honoured
    teacher.close()

    local = [models.sample(tiny.model, tiny.tok, [models.chat_prompt(tiny.tok, json.loads(p)[0]["content"])],
                           max_new_tokens=10, progress=False)[0] for _, p in requests]
    assert [r.samples[0]["text"] for r in results] == [x["samples"][0]["text"] for x in local]
    assert [r.prompt_tokens for r in results] == [x["prompt_tokens"] for x in local]
    assert teacher.calls["retries"] == 3 and teacher.calls["requests"] == 9
    assert teacher.calls["retried_by_cause"] == {"429": 1, "500": 1, "timeout/transport": 1}
    sent = server.log[-1]["body"]
    assert sent["model"] == "tiny" and sent["max_tokens"] == 10 and sent["temperature"] == 0.0


def test_clear_errors_auth_key_and_exhausted_retries(server, monkeypatch):
    monkeypatch.delenv("TEACHER_KEY", raising=False)
    with pytest.raises(TeacherError, match="TEACHER_KEY"):
        HTTPTeacher(server.url, "tiny", api_key_env="TEACHER_KEY")
    monkeypatch.setenv("TEACHER_KEY", "sk-test-123")
    teacher = HTTPTeacher(server.url, "tiny", api_key_env="TEACHER_KEY", retries=2, timeout=5)
    server.faults = ["401"]
    with pytest.raises(TeacherError, match="HTTP 401.*invalid api key"):
        teacher.generate(prompts(1), Options(max_new_tokens=4))
    assert len(server.log) == 1 and server.log[0]["auth"] == "Bearer sk-test-123"  # 4xx: no retry
    server.faults = ["503", "503", "503"]
    with pytest.raises(TeacherError, match=r"gave up after 3 attempts; last: HTTP 503"):
        teacher.generate(prompts(1), Options(max_new_tokens=4))
    assert len(server.log) == 4
    teacher.close()
    dead = HTTPTeacher("http://127.0.0.1:9/v1", "tiny", retries=1, timeout=1)  # nothing listens on port 9
    with pytest.raises(TeacherError, match="gave up after 2 attempts; last: ConnectError"):
        dead.generate(prompts(1), Options(max_new_tokens=4))


def test_logprobs_give_confidence(server):
    teacher = HTTPTeacher(server.url, "tiny", logprobs=True)
    (result,) = teacher.generate(prompts(1), Options(max_new_tokens=6, scores=True))
    sample = result.samples[0]
    assert sample["logprob"] < 0 and sample["entropy"] > 0
    assert server.log[-1]["body"]["logprobs"] is True and server.log[-1]["body"]["top_logprobs"] == 5
    teacher.close()


def test_confidence_reads_the_answer_tokens():
    content = [{"token": t, "logprob": lp, "top_logprobs": [{"token": t, "logprob": lp}, {"token": "x", "logprob": -2.0}]}
               for t, lp in [("So 7", -0.1), ("\nAnswer", -0.2), (":", -0.05), (" 7", -0.3), (".", -0.4)]]
    got = _confidence({"content": content})
    assert got["answer_logprob"] == pytest.approx(-0.7) and got["logprob"] == pytest.approx(-1.05)
    assert 0 < got["entropy"] < 0.7  # two options per token, the top one much likelier
    assert _confidence({"content": content[:1]})["answer_logprob"] is None
    assert _confidence(None) == {}


def http_params(url: str, **synth) -> Params:
    base = tiny_params().synthesize.model_dump()
    base.update({"teachers": [{"kind": "http", "base_url": url, "model": "tiny", "name": "tiny-http",
                               "usd_per_1m_prompt_tokens": 1000, "usd_per_1m_completion_tokens": 2000}],
                 "timeout": 2.0, "retries": 3, "concurrency": 2, **synth})
    return Params.model_validate({"domains": {"healthcare": {}, "education": {}}, "synthesize": base})


def test_the_stage_through_a_flaky_server_then_a_rerun_sends_nothing(tmp_path, server):
    root = make_project(tmp_path, "education", n_train=8, n_test=4)
    server.faults = ["500", "429"]
    summary = syn.main("education", http_params(server.url), root)
    assert (summary["generated"], summary["reused"]) == (12, 0)
    assert server.max_in_flight == 2  # synthesize.concurrency: never more requests in flight
    report = json.loads((root / "data/education/synthesize/report.json").read_text())
    acct = report["teachers"]["tiny-http"]
    assert acct["kind"] == "http" and acct["calls"]["retries"] == 2 and acct["calls"]["requests"] == 14
    assert acct["prompt_tokens"] > 0 and acct["usd"] == pytest.approx(
        (acct["prompt_tokens"] * 1000 + acct["completion_tokens"] * 2000) / 1e6)
    rows = read_jsonl(root / "data/education/synthesize/train.jsonl")
    assert len(rows) == 8 and all(r["teacher"] == "tiny-http" for r in rows)
    n = len(server.log)
    summary = syn.main("education", http_params(server.url), root)
    assert (summary["generated"], summary["reused"]) == (0, 12) and len(server.log) == n


def scripted(body: dict) -> dict:
    """A 'teacher' that answers 99 unless told the answer (STaR): then it explains and gives it."""
    user = body["messages"][-1]["content"]
    if "(The correct answer is " in user:
        label = user.rsplit("(The correct answer is ", 1)[1].split(".", 1)[0]
        text = f"Counting the items in the problem step by step gives {label}.\nAnswer: {label}"
    else:
        text = "I add everything up.\nAnswer: 99"
    return {"choices": [{"index": i, "message": {"content": text}} for i in range(body.get("n", 1))],
            "usage": {"prompt_tokens": len(user.split()), "completion_tokens": 12 * body.get("n", 1)}}


def test_star_rationalizes_wrong_train_records_only_and_marks_them(tmp_path):
    server = serve(scripted)
    try:
        root = make_project(tmp_path, "education", n_train=5, n_test=3)
        syn.main("education", http_params(server.url, star=True), root)
        train = read_jsonl(root / "data/education/synthesize/train.jsonl")
        test = read_jsonl(root / "data/education/synthesize/test.jsonl")
        assert all(r["star"] and r["kept"] and r["teacher_answer"] == r["label"] for r in train)
        assert all(r["rationale"].startswith("Counting the items") for r in train)
        assert not any(r["star"] or r["correct"] for r in test)  # test records never see the gold label
        hinted = [e for e in server.log if "(The correct answer is" in e["body"]["messages"][-1]["content"]]
        assert len(hinted) == 5
        report = json.loads((root / "data/education/synthesize/report.json").read_text())
        assert report["quality"]["train"]["star_kept"] == 5 and report["teachers"]["tiny-http"]["star_requests"] == 5
        # switched off: the same rows lose their rationale again, and nothing new is asked
        n = len(server.log)
        syn.main("education", http_params(server.url, star=False), root)
        assert not any(r["kept"] or r["star"] for r in read_jsonl(root / "data/education/synthesize/train.jsonl"))
        assert len(server.log) == n
    finally:
        server.shutdown()
        server.server_close()


def test_a_hard_error_stops_the_stage_but_keeps_the_finished_requests(tmp_path, server):
    root = make_project(tmp_path, "education", n_train=8, n_test=4)
    server.faults = [None] * 5 + ["401"]  # the 6th request, in the second batch of 4
    with pytest.raises(TeacherError, match="1 of 4 requests failed; first: .*HTTP 401"):
        syn.main("education", http_params(server.url), root)
    assert not (root / "data/education/synthesize").exists()
    (cache,) = (root / ".cache/synthesize/education").glob("*.jsonl")
    assert len(cache.read_text().splitlines()) == 7  # batch 1, and 3 of batch 2
    summary = syn.main("education", http_params(server.url), root)
    assert (summary["generated"], summary["reused"]) == (5, 7)
    ids = [json.loads(line)["id"] for line in cache.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 12
