from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dqe.config import JudgeConfig
from dqe.errors import ConfigError
from dqe.judge import InMemoryJudgeCache, Judge, JudgePair, JudgePrompt

API_KEY = "sk-test-SECRET-4242"
KEY_ENV = "DQE_TEST_JUDGE_KEY"
LABELS = ["positive", "negative"]


class FakeChatServer:
    """A chat-completions server whose behaviour per request is chosen by a marker in text A.

    Markers: ``slow-once``, ``malformed-once``, ``fenced``, ``500-once``, ``429-once``, ``always-500``,
    ``bad-label``, ``bad-request``, ``echo-auth-401``, ``verdict-b``; ``delay_s`` slows every request.
    """

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.authorizations: list[str | None] = []
        self.attempts: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                self.counted = True
                try:
                    server.handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left
                finally:
                    server.leave(self)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        body = json.loads(request.rfile.read(int(request.headers["Content-Length"])))
        user = body["messages"][1]["content"]
        marker = next((m for m in user.split() if m.startswith("@")), "@plain")[1:]
        with self.lock:
            self.requests.append(body)
            self.authorizations.append(request.headers.get("Authorization"))
            self.attempts[user] += 1
            attempt = self.attempts[user]
        if request.path != "/v1/chat/completions":
            return self.reply(request, 404, {"error": "not found"})
        time.sleep(self.delay_s)
        first = attempt == 1
        if marker == "slow-once" and first:
            time.sleep(1.5)
        if marker == "500-once" and first or marker == "always-500":
            return self.reply(request, 500, {"error": "internal"})
        if marker == "429-once" and first:
            return self.reply(request, 429, {"error": "rate limited"}, {"Retry-After": "0"})
        if marker == "bad-request":
            return self.reply(request, 400, {"error": "bad request"})
        if marker == "echo-auth-401":
            return self.reply(request, 401, {"error": f"invalid key {request.headers.get('Authorization')}"})
        content = json.dumps({"verdict": "a", "label": "negative", "reason": f"looked at {marker}"})
        if marker == "verdict-b":
            content = json.dumps({"verdict": "b", "label": "positive", "reason": "B is wrong"})
        elif marker == "malformed-once" and first:
            content = "I think A is mislabelled."
        elif marker == "fenced":
            content = f"```json\n{content}\n```"
        elif marker == "bad-label":
            content = json.dumps({"verdict": "a", "label": "neutral", "reason": "?"})
        message = {"role": "assistant", "content": content}
        return self.reply(request, 200, {"choices": [{"index": 0, "message": message}]})

    def leave(self, request: BaseHTTPRequestHandler) -> None:
        """A request stops counting as in flight once its answer is ready: after that the client may already
        have its response and send the next request while this thread is still finishing."""
        with self.lock:
            if getattr(request, "counted", False):
                request.counted = False
                self.in_flight -= 1

    def reply(self, request: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict | None = None) -> None:
        self.leave(request)
        data = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(data)

    def __enter__(self) -> FakeChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with FakeChatServer() as running:
        yield running


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, API_KEY)


def config_for(base_url: str, **overrides) -> JudgeConfig:
    settings = dict(
        enabled=True,
        base_url=base_url,
        model="test-model",
        api_key_env=KEY_ENV,
        max_concurrency=4,
        max_retries=2,
        timeout_s=0.5,
        backoff_s=0.0,
    )
    return JudgeConfig(**{**settings, **overrides})


def pair(marker: str, suffix: str = "") -> JudgePair:
    return JudgePair(f"the plot @{marker} was thin {suffix}", "positive", f"a thin plot {suffix}", "negative")


def test_request_follows_the_chat_completions_protocol(server):
    judge = Judge(config_for(server.base_url), LABELS)
    (verdict,) = judge.judge([pair("plain")])
    assert (verdict.verdict, verdict.label, verdict.reason) == ("a", "negative", "looked at plain")
    assert (verdict.model, verdict.prompt_version, verdict.from_cache) == ("test-model", "judge-v1", False)
    body = server.requests[0]
    assert body["model"] == "test-model" and body["temperature"] == 0.0
    assert body["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    user = body["messages"][1]["content"]
    for expected in ("the plot @plain was thin", "a thin plot", "Label: positive", "Label: negative", '"negative"]'):
        assert expected in user
    assert server.authorizations == [f"Bearer {API_KEY}"]


def test_each_failure_mode_recovers_or_ends_in_an_error_verdict(server):
    judge = Judge(config_for(server.base_url), LABELS)
    markers = ["slow-once", "malformed-once", "500-once", "429-once", "fenced", "verdict-b", "always-500", "bad-label"]
    verdicts = dict(zip(markers, judge.judge([pair(m) for m in markers])))
    for recovered in ("slow-once", "malformed-once", "500-once", "429-once", "fenced"):
        assert verdicts[recovered].verdict == "a", recovered
        assert verdicts[recovered].label == "negative"
    assert (verdicts["verdict-b"].verdict, verdicts["verdict-b"].label) == ("b", "positive")
    assert verdicts["always-500"].verdict == "error" and "HTTP 500" in verdicts["always-500"].reason
    assert verdicts["bad-label"].verdict == "error"
    assert "'neutral' is not in the label set" in verdicts["bad-label"].reason
    attempts = {m: n for user, n in server.attempts.items() for m in markers if f"@{m} " in user}
    assert attempts["slow-once"] == attempts["500-once"] == attempts["429-once"] == attempts["malformed-once"] == 2
    assert attempts["always-500"] == attempts["bad-label"] == 3  # max_retries=2: three tries, then give up
    assert attempts["fenced"] == attempts["verdict-b"] == 1


def test_client_errors_other_than_429_are_not_retried(server):
    judge = Judge(config_for(server.base_url), LABELS)
    (verdict,) = judge.judge([pair("bad-request")])
    assert verdict.verdict == "error" and "HTTP 400" in verdict.reason
    assert len(server.requests) == 1


def test_unreachable_server_gives_error_verdicts_not_exceptions():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    judge = Judge(config_for(f"http://127.0.0.1:{port}/v1", max_retries=1), LABELS)
    verdicts = judge.judge([pair("plain", "1"), pair("plain", "2")])
    assert [v.verdict for v in verdicts] == ["error", "error"]
    assert all("gave up after 2 attempts" in v.reason for v in verdicts)


def test_concurrency_never_exceeds_the_bound():
    with FakeChatServer(delay_s=0.2) as slow_server:
        judge = Judge(config_for(slow_server.base_url, max_concurrency=3, timeout_s=5.0), LABELS)
        verdicts = judge.judge([pair("plain", str(i)) for i in range(9)])
    assert [v.verdict for v in verdicts] == ["a"] * 9
    assert slow_server.max_in_flight == 3


def test_cache_answers_repeated_pairs_without_requests_but_retries_errors(server):
    cache = InMemoryJudgeCache()
    pairs = [pair("plain", "1"), pair("verdict-b", "2"), pair("always-500", "3"), pair("plain", "1")]
    first = Judge(config_for(server.base_url, max_retries=0), LABELS, cache=cache).judge(pairs)
    assert len(server.requests) == 3  # the duplicate pair is asked once
    assert first[0] == first[3]
    assert len(cache) == 2  # errors are not cached

    second = Judge(config_for(server.base_url, max_retries=0), LABELS, cache=cache).judge(pairs)
    assert len(server.requests) == 4  # only the failed pair is asked again
    assert [v.from_cache for v in second] == [True, True, False, True]
    assert [(v.verdict, v.label, v.pair_hash) for v in second] == [(v.verdict, v.label, v.pair_hash) for v in first]


def test_pair_hash_depends_on_everything_that_shapes_the_answer(server):
    judge = Judge(config_for(server.base_url), LABELS)
    base = JudgePair("text one", "positive", "text two", "negative")
    variants = [
        JudgePair("text one!", "positive", "text two", "negative"),
        JudgePair("text one", "negative", "text two", "negative"),
        JudgePair("text two", "negative", "text one", "positive"),
    ]
    hashes = {judge.pair_hash(p) for p in [base, *variants]}
    assert len(hashes) == 4
    assert judge.pair_hash(base) == Judge(config_for(server.base_url), LABELS).pair_hash(base)
    other_model = Judge(config_for(server.base_url, model="other"), LABELS)
    prompt = JudgePrompt.load("conf/prompts/judge.yaml")
    new_version = JudgePrompt(**{**prompt.__dict__, "version": "v2"})
    other_version = Judge(config_for(server.base_url), LABELS, prompt=new_version)
    assert len({judge.pair_hash(base), other_model.pair_hash(base), other_version.pair_hash(base)}) == 3


def test_api_key_never_appears_in_logs_verdicts_or_reprs(server, caplog):
    caplog.set_level(logging.DEBUG)
    judge = Judge(config_for(server.base_url), LABELS)
    verdicts = judge.judge([pair("echo-auth-401"), pair("always-500"), pair("malformed-once")])
    assert verdicts[0].verdict == "error" and "HTTP 401" in verdicts[0].reason
    assert "[redacted]" in verdicts[0].reason  # the server echoed the key; it was scrubbed
    assert server.attempts[next(u for u in server.attempts if "@echo-auth-401" in u)] == 1
    assert caplog.records, "failures should be logged"
    assert API_KEY not in caplog.text
    assert all(API_KEY not in repr(v) for v in verdicts)
    assert API_KEY not in repr(judge)


def test_key_from_databricks_secrets_when_the_variable_is_unset(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    asked = []

    def secret_getter(scope: str, key: str) -> str:
        asked.append((scope, key))
        return API_KEY

    cfg = config_for(server.base_url, databricks_secret_scope="dqe", databricks_secret_key="judge")
    Judge(cfg, LABELS, secret_getter=secret_getter).judge([pair("plain")])
    assert asked == [("dqe", "judge")]
    assert server.authorizations == [f"Bearer {API_KEY}"]


def test_missing_or_unreadable_key_is_a_clear_config_error(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ConfigError, match=KEY_ENV):
        Judge(config_for(server.base_url), LABELS)

    def failing_getter(scope: str, key: str) -> str:
        raise RuntimeError(f"secret value {API_KEY} could not be decoded")

    cfg = config_for(server.base_url, databricks_secret_scope="dqe", databricks_secret_key="judge")
    with pytest.raises(ConfigError, match="dqe/judge: RuntimeError") as caught:
        Judge(cfg, LABELS, secret_getter=failing_getter)
    assert API_KEY not in str(caught.value)


def test_pairs_with_labels_outside_the_label_set_are_rejected(server):
    judge = Judge(config_for(server.base_url), LABELS)
    with pytest.raises(ValueError, match="'neutral' is not in the label set"):
        judge.judge([JudgePair("x", "neutral", "y", "positive")])
    assert server.requests == []


def test_prompt_file_is_validated(tmp_path):
    bad = tmp_path / "judge.yaml"
    bad.write_text("version: 1\nsystem: hi\nuser: 'Text: $text_a, $sentiment'\n")
    with pytest.raises(ConfigError, match=r"unknown placeholders \['sentiment'\]"):
        JudgePrompt.load(bad)
    bad.write_text("version: 1\nuser: hi\nmodel: gpt\n")
    with pytest.raises(ConfigError, match=r"unknown keys \['model'\], missing keys \['system'\]"):
        JudgePrompt.load(bad)
    with pytest.raises(ConfigError, match="not found"):
        JudgePrompt.load(tmp_path / "absent.yaml")
