"""Shared fixtures and helpers of the test suite.

Tiny models, stand-in tokenizers and planted data come from `snmf_jax.testing`
(the one place that builds them); this file makes fixtures of the common ones
and holds the helpers several test modules share (import them with
`from conftest import ...`; test modules never import each other).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# CI explores a fixed set of examples, so a landing never hinges on a random
# draw; run locally without CI=true to explore new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

os.environ.setdefault("JAX_PLATFORMS", "cpu")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The workplace's shared/ folder beside the repo (skip when absent)."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED}")
    return SHARED


# Multi-device tests: a test marked `devices(n)` needs n JAX devices. When
# this process has fewer (the usual single-CPU-device run), it is skipped
# here and the module's `test_on_simulated_devices` runs the marked tests in
# a child pytest with n simulated CPU devices (XLA_FLAGS must be set before
# JAX starts, so it cannot be done in this process); the child's pytest
# report, assertions included, is shown when it fails.


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "devices(n): needs n JAX devices (run in a child pytest with n simulated "
                   "CPU devices when this process has fewer)")


def pytest_collection_modifyitems(config, items):
    import jax  # pylint: disable=g-import-not-at-top
    have = jax.device_count()
    for item in items:
        mark = item.get_closest_marker("devices")
        if mark is not None and have < mark.args[0]:
            item.add_marker(pytest.mark.skip(
                reason=f"needs {mark.args[0]} devices; run by test_on_simulated_devices"))


def run_on_simulated_devices(module: str, n: int, timeout: int = 900) -> None:
    """Runs the `devices`-marked tests of `module` in a child pytest with n CPU devices."""
    import jax  # pylint: disable=g-import-not-at-top
    if jax.device_count() >= n:
        pytest.skip(f"this process already has {jax.device_count()} devices")
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-m", "devices", module], capture_output=True, text=True,
                         timeout=timeout, env=env, cwd=Path(__file__).resolve().parents[1])
    report = out.stdout[-12000:] + out.stderr[-3000:]
    assert out.returncode == 0, f"child pytest with {n} devices failed:\n{report}"
    assert " passed" in out.stdout and " skipped" not in out.stdout.splitlines()[-1], report


# -- tiny models -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama():
    """The tiny llama (`testing.tiny_model`, seed 0) with `CharTokenizer` and its
    unembedding scaled x3, so next-token distributions are peaked."""
    from snmf_jax.testing import CharTokenizer, tiny_model
    return tiny_model(tokenizer=CharTokenizer(), logit_scale=3.0)


@pytest.fixture(scope="module")
def tiny_llama_invertible():
    """`tiny_llama`'s weights with `InvertibleTokenizer` (token offsets recoverable)."""
    from snmf_jax.testing import InvertibleTokenizer, tiny_model
    return tiny_model(tokenizer=InvertibleTokenizer(), logit_scale=3.0)


class StubJudge:
    """Concept: share of the letter assigned to the concept; fluency: share of distinct letters."""

    def __init__(self):
        self.concept_calls = []

    def concept(self, texts, concept):
        self.concept_calls.append((len(texts), concept))
        return np.array([t.count(concept) / max(len(t), 1) for t in texts])

    def fluency(self, texts):
        return np.array([len(set(t)) / 26 for t in texts])


@pytest.fixture(scope="module")
def tiny_word_model(tmp_path_factory):
    """A one-layer random llama (d_model 16, d_mlp 24, vocabulary 5) whose tokenizer
    is `testing.write_word_level_json`'s file, read as a loader reads it."""
    from snmf_jax.models import Tokenizer
    from snmf_jax.testing import tiny_model, write_word_level_json
    path = write_word_level_json(tmp_path_factory.mktemp("tok"))
    return tiny_model(vocab_size=5, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1,
                      d_mlp=24, max_position=32, tokenizer=Tokenizer.from_file(path))


# -- toy stores, results and report inputs (no model) ------------------------------

TOY_PROVENANCE = {"doc_ids": ("int32", ()), "positions": ("int32", ()),
                  "token_ids": ("int32", ()), "offsets": ("int32", (2,)),
                  "labels": ("int32", ())}


def write_toy_store(path, n_docs=10, per_doc=6, d=8):
    """A layer-2 store of n_docs documents of per_doc words "w{i}x{j}" (one row
    per word, random activations, labels doc % 2). Returns (rows, d)."""
    from snmf_jax.activations import StoreWriter
    texts = [" ".join(f"w{i}x{j}" for j in range(per_doc)) for i in range(n_docs)]
    offs = []
    for t in texts:
        pos = 0
        for w in t.split(" "):
            offs.append((pos, pos + len(w)))
            pos += len(w) + 1
    n = n_docs * per_doc
    w = StoreWriter(path, layers=(2,), d=d, chunk_rows=16, n_rows=n, settings={"t": 1},
                    provenance=TOY_PROVENANCE, info={"model": "", "site": "mlp_hidden"},
                    documents={"texts": texts, "labels": None, "label_names": ["a", "b"]})
    w.append({2: np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)},
             {"doc_ids": np.repeat(np.arange(n_docs), per_doc).astype(np.int32),
              "positions": np.tile(np.arange(per_doc), n_docs).astype(np.int32),
              "token_ids": np.arange(n, dtype=np.int32) % 5,
              "offsets": np.asarray(offs, np.int32),
              "labels": (np.repeat(np.arange(n_docs), per_doc) % 2).astype(np.int32)})
    w.finish()
    return n, d


def write_array_store(path, x, chunk_rows):
    """A one-layer (layer 0) store of the rows of x in chunks of chunk_rows, with no
    token metadata: the streaming and online fits' store source. Returns the store."""
    from snmf_jax.activations import StoreWriter
    w = StoreWriter(path, layers=(0,), d=x.shape[1], chunk_rows=chunk_rows,
                    n_rows=x.shape[0], settings={"test": True})
    for i in range(0, x.shape[0], chunk_rows):
        w.append({0: x[i:i + chunk_rows]}, {})
    return w.finish()


def write_toy_result(path, n, d, K=4):
    """A saved layer-2 SNMFResult of K random features over d neurons and n rows of codes."""
    from snmf_jax.factorize import SNMFResult
    rng = np.random.default_rng(1)
    SNMFResult(features=rng.standard_normal((K, d)).astype(np.float32),
               codes=rng.uniform(size=(n, K)).astype(np.float32), losses=np.geomspace(3, 1, 5),
               best_iter=5, converged=True, settings={}, metadata={"layer": 2}).save(path)


def toy_report_data(K=6, docs=12, seed=0, evil=False):
    """Labelled toy documents, random codes and sparse features: (Activations,
    codes (n, K), features (K, 50)). `evil` puts "</script>" in the texts."""
    from snmf_jax.activations import Activations
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "Monday", "red", "</script>" if evil else "blue"]
    texts, doc_ids, offs, toks, labels = [], [], [], [], []
    for d in range(docs):
        w = list(rng.choice(words, size=int(rng.integers(8, 20))))
        text, pos = "", []
        for x in w:
            start = len(text) + (1 if text else 0)
            text += (" " if text else "") + x
            pos.append((start, len(text)))
        texts.append(text)
        doc_ids += [d] * len(w)
        offs += pos
        toks += [words.index(x) for x in w]
        labels += [d % 3] * len(w)
    n = len(doc_ids)
    acts = Activations(X=np.zeros((n, 2), np.float32), doc_ids=np.asarray(doc_ids, np.int32),
                       positions=np.zeros(n, np.int32), token_ids=np.asarray(toks, np.int32),
                       offsets=np.asarray(offs, np.int32), texts=tuple(texts),
                       labels=np.asarray(labels, np.int32), label_names=("x", "y", "z"))
    codes = np.maximum(rng.standard_normal((n, K)), 0).astype(np.float32)
    feats = (rng.standard_normal((K, 50)) * (rng.uniform(size=(K, 50)) < 0.2)).astype(np.float32)
    return acts, codes, feats


# -- a scripted OpenAI-compatible server ---------------------------------------------


class ScriptedServer:
    """A loopback server that answers from a script: a list of actions per request,
    each (status, content or raw body, delay). The last action repeats."""

    def __init__(self, script):
        self.script = list(script)
        self.requests = []
        self.inflight = 0
        self.max_inflight = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append(body)
                    action = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                    outer.inflight += 1
                    outer.max_inflight = max(outer.max_inflight, outer.inflight)
                status, content, delay = action
                if callable(content):
                    content = content(body)
                done = False
                try:
                    time.sleep(delay)
                    # Out of flight before the reply leaves: once the client has
                    # it, it may send the next request before this thread resumes.
                    with outer.lock:
                        outer.inflight -= 1
                        done = True
                    if isinstance(content, bytes):
                        data = content
                    else:
                        data = json.dumps({"choices": [{"message": {"role": "assistant",
                                                                    "content": content}}],
                                           "usage": {"prompt_tokens": 11,
                                                     "completion_tokens": 3}}).encode()
                    self.send_response(status)
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    if not done:
                        with outer.lock:
                            outer.inflight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    """serve(*actions) starts a `ScriptedServer`; every one is closed after the test."""
    servers = []

    def make(*script):
        s = ScriptedServer(script)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


# -- multi-process launches ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_fit_processes(args: list[str], n: int, timeout: float) -> list[str]:
    """Starts n processes of `snmf-jax fit args... --coordinator ...` and waits
    (each must exit 0); always reaps them. Returns their stdouts."""
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = []
    try:
        for i in range(n):
            cmd = [sys.executable, "-m", "snmf_jax.cli", "fit", *args,
                   "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n),
                   "--process-id", str(i)]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, env=env, start_new_session=True))
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err[-4000:]
            outs.append(out)
        return outs
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
