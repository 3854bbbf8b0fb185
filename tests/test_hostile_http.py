"""Hostile catalogue, security and hangs: the LLM judge's HTTP client against
servers that misbehave on purpose.

Each server is a raw socket on 127.0.0.1 started by the test, scripted per
connection; every server action stops within seconds, and every client call
runs in a thread joined with a timeout, so a client that would hang fails the
test instead of holding it.
"""

import json
import socket
import threading
import time

import pytest

from snmf_jax.evaluate._llm_client import LLMClient, LLMConfig, LLMError

KEY = "sk-test-secret"
GOOD = json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok"}}],
                   "usage": {"prompt_tokens": 11, "completion_tokens": 3}}).encode()


class Hostile:
    """A loopback server: each accepted connection runs the next action of the
    script (the last one repeats) as action(conn, server)."""

    def __init__(self, *script):
        self.script = list(script)
        self.requests: list[bytes] = []  # raw request heads
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        conn.settimeout(5)
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                part = conn.recv(65536)
                if not part:
                    return
                buf += part
            head, rest = buf.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            while len(rest) < length:
                part = conn.recv(65536)
                if not part:
                    break
                rest += part
            with self.lock:
                self.requests.append(head)
                action = self.script.pop(0) if len(self.script) > 1 else self.script[0]
            action(conn, self)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()

    def saw_key(self) -> bool:
        return any(KEY.encode() in h for h in self.requests)


@pytest.fixture
def serve():
    servers = []

    def make(*script):
        servers.append(Hostile(*script))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def reply(status=200, body=GOOD, headers=()):
    def act(conn, server):
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
        conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
                     .encode() + body)
    return act


def raw(data: bytes):
    return lambda conn, server: conn.sendall(data)


def trickle(prefix: bytes, byte: bytes = b" ", every: float = 0.2, limit: float = 8.0):
    """Sends `prefix`, then one byte every `every` s until `limit` or shutdown."""
    def act(conn, server):
        conn.sendall(prefix)
        t0 = time.monotonic()
        while not server.stop.is_set() and time.monotonic() - t0 < limit:
            conn.sendall(byte)
            time.sleep(every)
    return act


def flood(limit: float = 4.0):
    """A 200 with no length that streams 64 KiB pieces until `limit` or shutdown."""
    def act(conn, server):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\n\r\n")
        t0, piece = time.monotonic(), b"[" * 65536
        while not server.stop.is_set() and time.monotonic() - t0 < limit:
            conn.sendall(piece)
    return act


def bounded(fn, seconds: float):
    """(result or exception, elapsed s) of fn() run in a thread; fails the test
    if it is still running after `seconds`."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - reported to the test
            out["value"] = e

    t0 = time.monotonic()
    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(seconds)
    assert not th.is_alive(), f"the client was still busy after {seconds} s"
    return out["value"], time.monotonic() - t0


def client(url, **kw):
    kw = {"backoff": 0.01, "timeout": 2.0, "max_retries": 1, "api_key": KEY, **kw}
    return LLMClient(LLMConfig(base_url=url, model="judge", **kw))


def chat(c):
    return c.chat([{"role": "user", "content": "hi"}])


# -- credentials stay at the configured origin ----------------------------------

def test_key_reaches_the_configured_origin(serve):
    s = serve(reply())
    value, _ = bounded(lambda: chat(client(s.url)), 10)
    assert value == "ok" and s.saw_key()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_to_another_origin_is_not_followed(serve, status):
    other = serve(reply())
    s = serve(reply(status, b"", [("Location", other.url + "/chat/completions")]))
    value, _ = bounded(lambda: chat(client(s.url)), 10)
    assert not other.saw_key(), "the API key was sent to the redirect's origin"
    assert isinstance(value, LLMError) and other.requests == []


def test_environment_proxy_does_not_see_the_request(serve, monkeypatch):
    proxy, origin = serve(reply()), serve(reply())
    for var in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{proxy.port}")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    value, _ = bounded(lambda: chat(client(origin.url)), 10)
    assert value == "ok" and origin.saw_key()
    assert proxy.requests == [], "the request (and its key) went through the proxy"


# -- every limit is a real bound ------------------------------------------------

@pytest.mark.parametrize("where", ["body", "status line", "headers"])
def test_trickling_server_cannot_hold_an_attempt_past_timeout(serve, where):
    prefix = {"body": b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n",
              "status line": b"", "headers": b"HTTP/1.1 200 OK\r\nX-Slow: "}[where]
    s = serve(trickle(prefix, b"H" if where == "status line" else b" "))
    value, elapsed = bounded(lambda: chat(client(s.url, timeout=1.0, max_retries=1,
                                                 backoff=0.0)), 12)
    assert isinstance(value, LLMError), value
    assert elapsed < 2 * 1.0 + 1.5, f"two 1 s attempts took {elapsed:.1f} s"


@pytest.mark.parametrize("retry_after", ["3600", "1e400", "inf", "nan", "-1",
                                         "Wed, 21 Oct 2099 07:28:00 GMT"])
def test_retry_after_is_capped_by_max_backoff(serve, retry_after):
    s = serve(reply(429, b"", [("Retry-After", retry_after)]), reply())
    c = client(s.url, max_backoff=0.2)
    value, elapsed = bounded(lambda: chat(c), 10)
    assert value == "ok" and c.stats.retries == 1
    assert elapsed < 3.0


def test_declared_huge_reply_is_refused(serve):
    s = serve(trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n",
                      b"x" * 65536, every=0.0, limit=4.0))
    value, _ = bounded(lambda: chat(client(s.url, max_reply_bytes=1 << 20)), 10)
    assert isinstance(value, LLMError) and "max_reply_bytes" in str(value)


def test_endless_reply_is_cut_at_max_reply_bytes(serve):
    s = serve(flood())
    value, elapsed = bounded(lambda: chat(client(s.url, max_reply_bytes=1 << 20,
                                                 timeout=10.0)), 12)
    assert isinstance(value, LLMError) and "max_reply_bytes" in str(value)
    assert elapsed < 3.0


# -- malformed replies are retried like a 5xx -----------------------------------

MALFORMED = {
    "garbage status line": raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
    "status line without a code": raw(b"HTTP/1.1 OK\r\n\r\n"),
    "truncated body": raw(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"choices\": ["),
    "truncated chunked body": raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  b"40\r\n{\"choices\""),
    "closed without reply": raw(b""),
}
for _name, _usage in {"usage is a list": [1, 2], "usage is a number": 7,
                      "usage is a string": "lots",
                      "token count is text": {"prompt_tokens": "many", "completion_tokens": 3},
                      "token count negative": {"prompt_tokens": -5, "completion_tokens": 3},
                      "token count fractional": {"prompt_tokens": 1.5, "completion_tokens": 3},
                      "token count a bool": {"prompt_tokens": True, "completion_tokens": 3},
                      "token count huge": {"prompt_tokens": 10 ** 30, "completion_tokens": 3},
                      }.items():
    MALFORMED[_name] = reply(200, json.dumps({"choices": [{"message": {"content": "odd"}}],
                                              "usage": _usage}).encode())


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_reply_is_retried(serve, case):
    s = serve(MALFORMED[case], reply())
    c = client(s.url)
    value, _ = bounded(lambda: chat(c), 10)
    assert value == "ok", value
    assert c.stats.retries == 1 and c.stats.prompt_tokens == 11


def test_persistently_malformed_reply_is_an_llm_error(serve):
    s = serve(MALFORMED["garbage status line"])
    value, _ = bounded(lambda: chat(client(s.url, max_retries=2)), 10)
    assert isinstance(value, LLMError) and "failed after 3 attempts" in str(value)
    assert len(s.requests) == 3


@pytest.mark.parametrize("kw", [{"timeout": 0}, {"timeout": float("inf")}, {"backoff": -1},
                                {"max_backoff": float("nan")}, {"max_reply_bytes": 0},
                                {"base_url": "http://user:pw@127.0.0.1:1/v1"},
                                # a bool is not a count or a number of seconds
                                {"concurrency": True}, {"max_retries": True},
                                {"max_reply_bytes": True}, {"timeout": True},
                                {"concurrency": 2.5}, {"max_tokens": 0},
                                {"temperature": -1.0}])
def test_config_limits_must_be_real(kw):
    with pytest.raises(ValueError, match="LLMConfig"):
        LLMConfig(**kw)
