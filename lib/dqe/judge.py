"""LLM judge for noisy pairs, through an OpenAI-compatible chat-completions API.

The DQE paper asks GPT-4o which row of a noisy pair is mislabelled; its prompt is not published, so ours lives in
``conf/prompts/judge.yaml``. Any server speaking ``POST {base_url}/chat/completions`` works: OpenAI, vLLM,
Databricks Model Serving.

- One verdict per pair: ``a`` (text A is mislabelled), ``b`` (text B is), ``ambiguous``, or ``error`` when no
  valid answer came back. Errors are never cached, so a later run asks again.
- At most ``max_concurrency`` requests in flight (one thread each); every request has a ``timeout_s`` socket
  timeout. 429, 5xx, timeouts, connection failures and malformed answers are retried up to ``max_retries`` times
  with exponential backoff and jitter (``Retry-After`` is honoured, up to a minute); other HTTP errors are not
  retried. Nothing a single pair does fails the batch.
- Verdicts are cached by a pair hash: sha256 of model, prompt version, label set, both texts and both labels.
- The API key comes from the environment variable ``api_key_env`` or, failing that, from Databricks secrets
  through ``secret_getter`` (pass ``dbutils.secrets.get``). It is never logged, put in a verdict, or shown in a
  repr; server messages are scrubbed of it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import random
import re
import string
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import yaml

from dqe.config import PROJECT_ROOT, JudgeConfig
from dqe.errors import ConfigError

logger = logging.getLogger(__name__)

ANSWERS = ("a", "b", "ambiguous")
ERROR = "error"
_PLACEHOLDERS = frozenset({"labels", "text_a", "label_a", "text_b", "label_b"})
_MAX_RETRY_AFTER_S = 60.0
_MAX_REASON_CHARS = 2000
_SERVER_MESSAGE_CHARS = 300
_CODE_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True)
class JudgePair:
    """Two similar texts with different labels; ``a`` is conventionally the wrongly predicted row."""

    text_a: str
    label_a: str
    text_b: str
    label_b: str


@dataclass(frozen=True)
class JudgeVerdict:
    """The judge's answer for one pair.

    ``verdict``: ``a``/``b`` (that text is mislabelled), ``ambiguous`` or ``error``. ``label``: the corrected
    label of the mislabelled text (from the label set), or None. ``reason``: the judge's reason, or what went
    wrong for ``error``. ``from_cache``: the verdict came from the cache, not from a request in this call.
    """

    pair_hash: str
    verdict: str
    label: str | None
    reason: str
    model: str
    prompt_version: str
    from_cache: bool = False


class JudgeCache(Protocol):
    """Where verdicts persist between runs, keyed by pair hash (a Delta table on Spark, a dict in tests)."""

    def lookup(self, hashes: Sequence[str]) -> Mapping[str, JudgeVerdict]:
        """The stored verdicts among ``hashes``; hashes with none are simply absent."""
        ...

    def store(self, records: Sequence[JudgeVerdict]) -> None:
        """Store verdicts, replacing any with the same hash."""
        ...


class InMemoryJudgeCache:
    """A thread-safe dict-backed :class:`JudgeCache`."""

    def __init__(self) -> None:
        self._records: dict[str, JudgeVerdict] = {}
        self._lock = threading.Lock()

    def lookup(self, hashes: Sequence[str]) -> dict[str, JudgeVerdict]:
        with self._lock:
            return {h: self._records[h] for h in hashes if h in self._records}

    def store(self, records: Sequence[JudgeVerdict]) -> None:
        with self._lock:
            self._records.update((record.pair_hash, record) for record in records)

    def __len__(self) -> int:
        return len(self._records)


@dataclass(frozen=True)
class JudgePrompt:
    """The judge's prompt and generation settings, as loaded from ``conf/prompts/judge.yaml``."""

    version: str
    system: str
    user: str
    temperature: float = 0.0
    max_tokens: int | None = None
    response_format: str | None = "json_object"

    @classmethod
    def load(cls, path: str | Path) -> JudgePrompt:
        file = Path(path)
        if not file.is_absolute():
            file = PROJECT_ROOT / file
        if not file.is_file():
            raise ConfigError(f"judge prompt file not found: {file}")
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: expected a mapping with version, system and user")
        unknown = set(loaded) - {f.name for f in cls.__dataclass_fields__.values()}
        missing = {"version", "system", "user"} - set(loaded)
        if unknown or missing:
            raise ConfigError(f"{file}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        for key in ("system", "user"):
            identifiers = set(string.Template(str(loaded[key])).get_identifiers())
            if not identifiers <= _PLACEHOLDERS:
                raise ConfigError(
                    f"{file}: {key} uses unknown placeholders {sorted(identifiers - _PLACEHOLDERS)}; "
                    f"known: {sorted(_PLACEHOLDERS)}"
                )
        return cls(**{**loaded, "version": str(loaded["version"])})


class _Retryable(Exception):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _Fatal(Exception):
    pass


def _resolve_api_key(config: JudgeConfig, secret_getter: Callable[[str, str], str] | None) -> str:
    key = os.environ.get(config.api_key_env)
    if key:
        return key
    scope, name = config.databricks_secret_scope, config.databricks_secret_key
    if scope and name and secret_getter is not None:
        try:
            key = secret_getter(scope, name)
        except Exception as exc:  # the getter's own message may quote the secret's surroundings; keep the type
            raise ConfigError(f"could not read Databricks secret {scope}/{name}: {type(exc).__name__}") from None
        if key:
            return key
    raise ConfigError(
        f"no API key for the judge: set the environment variable {config.api_key_env}, or set "
        "triage.judge.databricks_secret_scope and databricks_secret_key and pass a secret getter"
    )


def _retry_after_seconds(value: str | None) -> float | None:
    try:
        return min(float(value), _MAX_RETRY_AFTER_S) if value else None
    except ValueError:  # an HTTP date instead of seconds: fall back to our own backoff
        return None


class Judge:
    """Judges noisy pairs with an LLM; see the module docstring for the protocol, retries and caching.

    Parameters
    ----------
    config : JudgeConfig
    labels : sequence of str
        The dataset's label set, shown to the judge; pair labels and corrected labels must come from it.
    cache : JudgeCache, optional
        Defaults to a fresh :class:`InMemoryJudgeCache`.
    secret_getter : callable (scope, key) -> str, optional
        Reads the key from Databricks secrets when the environment variable is unset, e.g. ``dbutils.secrets.get``.
    prompt : JudgePrompt, optional
        Defaults to ``JudgePrompt.load(config.prompt_file)``.
    """

    def __init__(
        self,
        config: JudgeConfig,
        labels: Sequence[str],
        *,
        cache: JudgeCache | None = None,
        secret_getter: Callable[[str, str], str] | None = None,
        prompt: JudgePrompt | None = None,
    ) -> None:
        label_set = [str(label) for label in labels]
        if not label_set or len(set(label_set)) != len(label_set):
            raise ValueError(f"labels must be a non-empty list of distinct labels, got {label_set!r}")
        self._config = config
        self._labels = label_set
        self._cache = InMemoryJudgeCache() if cache is None else cache
        self._prompt = JudgePrompt.load(config.prompt_file) if prompt is None else prompt
        self._api_key = _resolve_api_key(config, secret_getter)
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._jitter = random.Random()

    def __repr__(self) -> str:
        return (
            f"Judge(model={self._config.model!r}, url={self._url!r}, prompt_version={self._prompt.version!r}, "
            f"max_concurrency={self._config.max_concurrency})"
        )

    def pair_hash(self, pair: JudgePair) -> str:
        """The cache key of a pair: everything that decides the judge's answer."""
        fields = [self._config.model, self._prompt.version, self._labels]
        fields += [pair.text_a, pair.label_a, pair.text_b, pair.label_b]
        return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode("utf-8")).hexdigest()

    def judge(self, pairs: Sequence[JudgePair]) -> list[JudgeVerdict]:
        """One verdict per pair, in order. Cached pairs send no request; identical pairs send one."""
        for position, pair in enumerate(pairs):
            for label in (pair.label_a, pair.label_b):
                if label not in self._labels:
                    raise ValueError(f"pair {position}: label {label!r} is not in the label set {self._labels}")
        hashes = [self.pair_hash(pair) for pair in pairs]
        cached = self._cache.lookup(list(dict.fromkeys(hashes)))
        known = {h: replace(verdict, from_cache=True) for h, verdict in cached.items()}
        to_ask = {h: pair for h, pair in zip(hashes, pairs) if h not in known}
        if to_ask:
            workers = min(self._config.max_concurrency, len(to_ask))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dqe-judge") as pool:
                answered = dict(zip(to_ask, pool.map(self._judge_safely, to_ask.values(), to_ask.keys())))
            self._cache.store([v for v in answered.values() if v.verdict != ERROR])
            known.update(answered)
        return [known[h] for h in hashes]

    def _judge_safely(self, pair: JudgePair, pair_hash: str) -> JudgeVerdict:
        try:
            return self._judge_one(pair, pair_hash)
        except Exception as exc:  # a bug here must not sink the other pairs of the batch
            problem = self._scrub(f"unexpected {type(exc).__name__}: {exc}")
            logger.error("judge pair %s: %s", pair_hash[:12], problem)
            return self._verdict(pair_hash, ERROR, None, problem)

    def _judge_one(self, pair: JudgePair, pair_hash: str) -> JudgeVerdict:
        body = self._request_body(pair)
        attempts = self._config.max_retries + 1
        problem, retry_after_s = "", None
        for attempt in range(attempts):
            if attempt:
                self._back_off(attempt, retry_after_s)
            try:
                answer, label, reason = self._parse(self._post(body))
            except _Retryable as exc:
                problem, retry_after_s = self._scrub(str(exc)), exc.retry_after_s
                logger.info("judge pair %s: attempt %d/%d failed: %s", pair_hash[:12], attempt + 1, attempts, problem)
                continue
            except _Fatal as exc:
                problem = self._scrub(str(exc))
                logger.warning("judge pair %s: not retried: %s", pair_hash[:12], problem)
                return self._verdict(pair_hash, ERROR, None, problem)
            return self._verdict(pair_hash, answer, label, self._scrub(reason))
        logger.warning("judge pair %s: gave up after %d attempts: %s", pair_hash[:12], attempts, problem)
        return self._verdict(pair_hash, ERROR, None, f"gave up after {attempts} attempts: {problem}")

    def _verdict(self, pair_hash: str, verdict: str, label: str | None, reason: str) -> JudgeVerdict:
        reason = reason[:_MAX_REASON_CHARS]
        return JudgeVerdict(pair_hash, verdict, label, reason, self._config.model, self._prompt.version)

    def _back_off(self, attempt: int, retry_after_s: float | None) -> None:
        delay = self._config.backoff_s * 2 ** (attempt - 1) * self._jitter.uniform(0.5, 1.0)
        time.sleep(max(delay, retry_after_s or 0.0))

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]")

    def _request_body(self, pair: JudgePair) -> bytes:
        values = {
            "labels": json.dumps(self._labels, ensure_ascii=False),
            "text_a": pair.text_a,
            "label_a": pair.label_a,
            "text_b": pair.text_b,
            "label_b": pair.label_b,
        }
        body: dict[str, Any] = {
            "model": self._config.model,
            "messages": [
                {"role": "system", "content": string.Template(self._prompt.system).substitute(values)},
                {"role": "user", "content": string.Template(self._prompt.user).substitute(values)},
            ],
            "temperature": self._prompt.temperature,
        }
        if self._prompt.max_tokens is not None:
            body["max_tokens"] = self._prompt.max_tokens
        if self._prompt.response_format is not None:
            body["response_format"] = {"type": self._prompt.response_format}
        return json.dumps(body).encode("utf-8")

    def _post(self, body: bytes) -> Any:
        request = urllib.request.Request(
            self._url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._api_key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._config.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            message = f"HTTP {exc.code}: {exc.read()[:_SERVER_MESSAGE_CHARS].decode('utf-8', 'replace')}"
            if exc.code == 429 or exc.code >= 500:
                raise _Retryable(message, _retry_after_seconds(exc.headers.get("Retry-After"))) from None
            raise _Fatal(message) from None
        except (http.client.HTTPException, OSError) as exc:  # timeouts, refused or reset connections
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise _Retryable(f"request failed: {type(reason).__name__}: {reason}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise _Retryable(f"response is not JSON: {raw[:_SERVER_MESSAGE_CHARS]!r}") from None

    def _parse(self, payload: Any) -> tuple[str, str | None, str]:
        """(verdict, label, reason) from a chat-completions response, or :class:`_Retryable` if malformed."""
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise _Retryable("response has no choices[0].message.content") from None
        if not isinstance(content, str):
            raise _Retryable("the message content is not text")
        fenced = _CODE_FENCE.match(content.strip())
        try:
            answer = json.loads(fenced.group(1) if fenced else content)
        except ValueError:
            raise _Retryable(f"the answer is not JSON: {content[:_SERVER_MESSAGE_CHARS]!r}") from None
        if not isinstance(answer, dict):
            raise _Retryable(f"the answer is not a JSON object: {content[:_SERVER_MESSAGE_CHARS]!r}")
        verdict = str(answer.get("verdict", "")).strip().lower()
        if verdict not in ANSWERS:
            raise _Retryable(f"verdict {answer.get('verdict')!r} is not one of {list(ANSWERS)}")
        label = answer.get("label")
        if verdict == "ambiguous":
            label = None
        elif label is not None and label not in self._labels:
            raise _Retryable(f"label {label!r} is not in the label set")
        reason = answer.get("reason")
        return verdict, label, reason if isinstance(reason, str) else ""
