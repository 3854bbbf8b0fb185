"""A small OpenAI-compatible chat client (stdlib only): retries, backoff, a
concurrency limit and a dry run that counts requests and tokens.

    client = LLMClient(LLMConfig(base_url="http://127.0.0.1:8080/v1", model="gpt-4o-mini"))
    text = client.chat([{"role": "user", "content": "Hello"}])
    client.stats        # requests, retries, prompt/completion tokens

Every limit is a real bound on what a server can make the client do: one
attempt ends at `timeout` seconds whatever the server sends (a watchdog shuts
the socket, so a server trickling a byte at a time cannot hold it), a wait
between attempts never exceeds `max_backoff` whatever Retry-After says, and a
reply over `max_reply_bytes` is refused. Requests go to `base_url` and nowhere
else: redirects are not followed and proxy settings of the environment are
not used, so the API key never leaves the configured origin.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import math
import os
import socket
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

from snmf_jax import _checks

T = TypeVar("T")
R = TypeVar("R")


class LLMError(RuntimeError):
    """The server refused a request (4xx other than 429) or kept failing."""


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    """Where and how to call the chat endpoint.

    Attributes:
      base_url: the API root, e.g. "https://api.openai.com/v1" or
        "http://127.0.0.1:8080/v1"; requests go to {base_url}/chat/completions.
      model: the model name sent with each request.
      api_key: bearer token; None reads the OPENAI_API_KEY environment variable
        (and sends none if that is unset, as local servers expect).
      temperature: sampling temperature (0: the judge's deterministic setting).
      max_tokens: completion budget per request.
      timeout: seconds one attempt may take in all (connect, send, the whole
        reply) before it counts as failed (and is retried).
      max_retries: retries of a request after a 429, a 5xx, a timeout, a
        dropped connection or a malformed reply (status line, truncated body,
        usage field), before LLMError.
      backoff: first retry delay in seconds; doubles each retry. A
        Retry-After header may lengthen a delay, never beyond max_backoff.
      max_backoff: the longest delay between two attempts.
      max_reply_bytes: a longer reply is an LLMError (not retried).
      concurrency: requests in flight at once, across threads.
      dry_run: send nothing; count the requests and estimate the tokens.
    """

    base_url: str = "http://127.0.0.1:8080/v1"
    model: str = "default"
    api_key: str | None = None
    temperature: float = 0.0
    max_tokens: int = 256
    timeout: float = 60.0
    max_retries: int = 4
    backoff: float = 1.0
    max_backoff: float = 30.0
    max_reply_bytes: int = 8 << 20
    concurrency: int = 4
    dry_run: bool = False

    def __post_init__(self):
        if not isinstance(self.base_url, str) or not self.base_url.startswith(
                ("http://", "https://")):
            raise ValueError(f"LLMConfig.base_url must start with http:// or https://; "
                             f"got {self.base_url!r}")
        try:
            parts = urllib.parse.urlsplit(self.base_url)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as e:
            raise ValueError(f"LLMConfig.base_url {self.base_url!r} is not a URL ({e})") from None
        if not parts.hostname or parts.username is not None or parts.query or parts.fragment:
            raise ValueError(f"LLMConfig.base_url must be scheme://host[:port]/path with no "
                             f"user, query or fragment; got {self.base_url!r}")
        # Seconds are finite reals and counts are ints; a bool is neither.
        _checks.real("LLMConfig.timeout", self.timeout, lo=0, lo_open=True)
        _checks.real("LLMConfig.backoff", self.backoff, lo=0)
        _checks.real("LLMConfig.max_backoff", self.max_backoff, lo=0)
        _checks.real("LLMConfig.temperature", self.temperature, lo=0)
        _checks.integer("LLMConfig.max_tokens", self.max_tokens, lo=1)
        _checks.integer("LLMConfig.max_reply_bytes", self.max_reply_bytes, lo=1)
        _checks.integer("LLMConfig.concurrency", self.concurrency, lo=1)
        _checks.integer("LLMConfig.max_retries", self.max_retries, lo=0)


@dataclasses.dataclass
class LLMStats:
    """Counters of one client (thread-safe updates through the client)."""

    requests: int = 0  # chat calls (a dry run counts the ones it would make)
    http_attempts: int = 0  # HTTP requests actually sent, retries included
    retries: int = 0
    prompt_tokens: int = 0  # from the server's usage, else estimated (chars / 4)
    completion_tokens: int = 0
    estimated: bool = False  # some token counts are estimates


class _Retry(Exception):
    """One attempt failed in a way worth another (429, 5xx, timeout, malformed reply)."""

    def __init__(self, message: str, wait: float | None = None):
        super().__init__(message)
        self.wait = wait


def estimate_tokens(text: str) -> int:
    """Rough token count (~4 characters per token for English)."""
    return max(1, (len(text) + 3) // 4)


class LLMClient:
    """OpenAI-compatible chat completions over HTTP, with retries and a concurrency cap.

    Args:
      config: an LLMConfig.
    """

    def __init__(self, config: LLMConfig):
        self.config = config
        self.stats = LLMStats()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(config.concurrency)
        key = config.api_key if config.api_key is not None else os.environ.get("OPENAI_API_KEY")
        self._headers = {"Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"

    def _count(self, **kw) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self.stats, k, getattr(self.stats, k) + v if k != "estimated" else v)

    def chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The reply's text ("" when the server's answer is malformed).

        Raises:
          LLMError: a 4xx other than 429, or still failing after max_retries.
        """
        cfg = self.config
        prompt = "".join(m["content"] for m in messages)
        self._count(requests=1)
        if cfg.dry_run:
            self._count(prompt_tokens=estimate_tokens(prompt), completion_tokens=cfg.max_tokens,
                        estimated=True)
            return ""
        body = json.dumps({"model": cfg.model, "messages": list(map(dict, messages)),
                           "temperature": cfg.temperature, "max_tokens": cfg.max_tokens}).encode()
        url = cfg.base_url.rstrip("/") + "/chat/completions"
        last = ""
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                self._count(retries=1)
            wait = None
            with self._slots:
                self._count(http_attempts=1)
                try:
                    return self._parse(self._post(url, body), prompt)
                except _Retry as e:
                    last, wait = str(e), e.wait
            if attempt < cfg.max_retries:
                delay = cfg.backoff * 2 ** min(attempt, 60)
                if wait is not None and math.isfinite(wait) and wait > delay:
                    delay = wait
                time.sleep(min(cfg.max_backoff, delay))
        raise LLMError(f"{url}: failed after {cfg.max_retries + 1} attempts (last: {last})")

    def _post(self, url: str, body: bytes) -> bytes:
        """One POST to `url`, whole within `timeout` seconds; the reply body of a 2xx.

        Raises:
          _Retry: 429, 5xx, timeout, dropped connection, malformed status line
            or truncated body.
          LLMError: a redirect, another 4xx, or a reply over max_reply_bytes.
        """
        cfg = self.config
        parts = urllib.parse.urlsplit(url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname, parts.port, timeout=cfg.timeout)
        deadline = time.monotonic() + cfg.timeout
        # The watchdog: per-read socket timeouts alone let a server that sends a
        # byte every so often hold the attempt for ever.
        fired = threading.Event()
        watchdog = threading.Timer(cfg.timeout, _shut, (conn, fired))
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request("POST", parts.path or "/", body=body, headers=self._headers)
            resp = conn.getresponse()
            status = resp.status
            if 300 <= status < 400:
                raise LLMError(f"{url}: HTTP {status} redirect to "
                               f"{(resp.getheader('Location') or '?')[:100]!r}; redirects are "
                               "not followed (requests and the API key go only to base_url)")
            if status == 429 or status >= 500:
                raise _Retry(f"HTTP {status}", _retry_after(resp.getheader("Retry-After")))
            if not 200 <= status < 300:
                raise LLMError(f"{url}: HTTP {status} {resp.reason[:100]}: "
                               f"{resp.read(200)!r}")
            length = resp.getheader("Content-Length")
            if length is not None and length.strip().isdigit() and \
                    int(length) > cfg.max_reply_bytes:
                raise LLMError(f"{url}: a reply of {int(length)} bytes is over "
                               f"max_reply_bytes={cfg.max_reply_bytes}")
            chunks, size = [], 0
            while True:
                chunk = resp.read1(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > cfg.max_reply_bytes:
                    raise LLMError(f"{url}: the reply is over max_reply_bytes="
                                   f"{cfg.max_reply_bytes}")
                chunks.append(chunk)
            if fired.is_set() or time.monotonic() > deadline:  # whatever was read is cut
                raise TimeoutError("deadline passed")
            if resp.length:  # read1 ends quietly when the server stops short
                raise http.client.IncompleteRead(b"".join(chunks), resp.length)
            return b"".join(chunks)
        except (http.client.HTTPException, OSError, ValueError) as e:
            if fired.is_set() or time.monotonic() >= deadline:
                raise _Retry(f"no whole reply within timeout={cfg.timeout} s") from None
            raise _Retry(f"{type(e).__name__}: {str(e)[:200]}") from None
        finally:
            watchdog.cancel()
            conn.close()

    def _parse(self, raw: bytes, prompt: str) -> str:
        try:
            data = json.loads(raw)
            text = data["choices"][0]["message"]["content"] or ""
            if not isinstance(text, str):
                raise TypeError
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):
            # A reply that is not a chat completion: the judge asks again.
            self._count(prompt_tokens=estimate_tokens(prompt), estimated=True)
            return ""
        usage = data.get("usage")
        if usage is not None and not isinstance(usage, dict):
            raise _Retry(f"malformed usage field {usage!r:.80}")
        usage = usage or {}
        counts = [usage.get(k) for k in ("prompt_tokens", "completion_tokens")]
        if any(c is not None and not (_checks.is_int(c) and 0 <= c <= 1 << 40)
               for c in counts):
            raise _Retry(f"malformed usage field {usage!r:.80}")
        if None not in counts:
            self._count(prompt_tokens=counts[0], completion_tokens=counts[1])
        else:
            self._count(prompt_tokens=estimate_tokens(prompt),
                        completion_tokens=estimate_tokens(text), estimated=True)
        return text

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """[fn(x) for x in items], run on `concurrency` threads, in order."""
        items = list(items)
        if len(items) <= 1 or self.config.concurrency == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            return list(pool.map(fn, items))


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; an HTTP date, garbage, NaN or a negative is ignored."""
    try:
        wait = float(value) if value is not None else None
    except ValueError:
        return None
    return wait if wait is not None and math.isfinite(wait) and wait >= 0 else None


def _shut(conn: http.client.HTTPConnection, fired: threading.Event) -> None:
    """Ends an attempt at its deadline: a blocked read returns at once."""
    fired.set()
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
