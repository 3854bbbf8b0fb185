"""A small OpenAI-compatible chat client (stdlib only): retries, backoff, a
concurrency limit and a dry run that counts requests and tokens.

    client = LLMClient(LLMConfig(base_url="http://127.0.0.1:8080/v1", model="gpt-4o-mini"))
    text = client.chat([{"role": "user", "content": "Hello"}])
    client.stats        # requests, retries, prompt/completion tokens
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

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
      timeout: seconds before a request counts as failed (and is retried).
      max_retries: retries of a request after a 429, a 5xx, a timeout or a
        dropped connection, before LLMError.
      backoff: first retry delay in seconds; doubles each retry (capped at
        max_backoff); a Retry-After header, when sent, is honoured.
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
    concurrency: int = 4
    dry_run: bool = False

    def __post_init__(self):
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"LLMConfig.base_url must start with http:// or https://; "
                             f"got {self.base_url!r}")
        if self.concurrency < 1:
            raise ValueError(f"LLMConfig.concurrency must be >= 1; got {self.concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"LLMConfig.max_retries must be >= 0; got {self.max_retries}")


@dataclasses.dataclass
class LLMStats:
    """Counters of one client (thread-safe updates through the client)."""

    requests: int = 0  # chat calls (a dry run counts the ones it would make)
    http_attempts: int = 0  # HTTP requests actually sent, retries included
    retries: int = 0
    prompt_tokens: int = 0  # from the server's usage, else estimated (chars / 4)
    completion_tokens: int = 0
    estimated: bool = False  # some token counts are estimates


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
                req = urllib.request.Request(url, data=body, headers=self._headers, method="POST")
                try:
                    with urllib.request.urlopen(req, timeout=cfg.timeout) as resp:
                        raw = resp.read()
                    return self._parse(raw, prompt)
                except urllib.error.HTTPError as e:
                    if e.code != 429 and e.code < 500:
                        raise LLMError(f"{url}: HTTP {e.code} {e.reason}: "
                                       f"{e.read()[:200]!r}") from None
                    last = f"HTTP {e.code}"
                    wait = _retry_after(e.headers.get("Retry-After"))
                except (TimeoutError, socket.timeout, urllib.error.URLError,
                        ConnectionError) as e:
                    last = f"{type(e).__name__}: {e}"
            if attempt < cfg.max_retries:
                delay = min(cfg.max_backoff, cfg.backoff * 2 ** attempt)
                time.sleep(max(delay, wait or 0.0))
        raise LLMError(f"{url}: failed after {cfg.max_retries + 1} attempts (last: {last})")

    def _parse(self, raw: bytes, prompt: str) -> str:
        try:
            data = json.loads(raw)
            text = data["choices"][0]["message"]["content"] or ""
            if not isinstance(text, str):
                raise TypeError
        except (ValueError, KeyError, IndexError, TypeError):
            self._count(prompt_tokens=estimate_tokens(prompt), estimated=True)
            return ""
        usage = data.get("usage") or {}
        if "prompt_tokens" in usage and "completion_tokens" in usage:
            self._count(prompt_tokens=int(usage["prompt_tokens"]),
                        completion_tokens=int(usage["completion_tokens"]))
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
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
