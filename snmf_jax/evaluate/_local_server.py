"""A local OpenAI-compatible LLM server for the judge: llama.cpp serving a GGUF.

    with serve_gguf("SmolLM2-135M-Instruct.Q4_1.gguf") as base_url:
        judge = LLMJudge(LLMClient(LLMConfig(base_url=base_url, model="local")))
        judge.fluency(["Some text."])

Needs `pip install "llama-cpp-python[server]"` (builds llama.cpp from source,
~5 minutes on 2 cores). The server binds a loopback address only and is
stopped when the block exits.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _check_loopback(host: str) -> None:
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"host must be a loopback address such as 127.0.0.1; got {host!r}")


@contextlib.contextmanager
def serve_gguf(model_path: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 0,
               n_ctx: int = 2048, n_threads: int | None = None, startup_timeout: float = 180.0,
               extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """Runs `python -m llama_cpp.server` on a GGUF for the duration of a block.

    Args:
      model_path: the .gguf file (a chat model: the judge sends chat requests).
      host: loopback address to bind.
      port: TCP port (0: a free one).
      n_ctx: context window in tokens (prompt + reply).
      n_threads: CPU threads (None: llama.cpp's default).
      startup_timeout: seconds to wait for the model to load.
      extra_args: more `llama_cpp.server` flags.

    Yields:
      The API root, e.g. "http://127.0.0.1:40123/v1", for `LLMConfig.base_url`.

    Raises:
      FileNotFoundError: no such GGUF file.
      ModuleNotFoundError: llama-cpp-python is not installed.
      RuntimeError: the server exited or did not answer within startup_timeout
        (its log's last lines are in the message).
    """
    _check_loopback(host)
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"model_path: no such GGUF file {str(path)!r}")
    if importlib.util.find_spec("llama_cpp") is None:
        raise ModuleNotFoundError('serve_gguf needs llama.cpp\'s server: '
                                  'pip install "llama-cpp-python[server]"')
    port = port or _free_port(host)
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--host", host,
           "--port", str(port), "--n_ctx", str(int(n_ctx)), *extra_args]
    if n_threads:
        cmd += ["--n_threads", str(int(n_threads))]
    base = f"http://{host}:{port}/v1"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(proc, base, startup_timeout, log)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(proc: subprocess.Popen, base: str, timeout: float, log) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with code {proc.returncode}: "
                               f"{_tail(log)}")
        try:
            with urllib.request.urlopen(base + "/models", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, socket.timeout):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"llama_cpp.server did not answer at {base} within {timeout:.0f}s: "
                       f"{_tail(log)}")


def _tail(log, n: int = 600) -> str:
    log.seek(0)
    text = log.read().decode("utf-8", "replace").strip()
    return " | ".join(text[-n:].splitlines()[-6:]) or "(no output)"
