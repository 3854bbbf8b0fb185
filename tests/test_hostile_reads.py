"""Hostile catalogue, hangs and unbounded reads: inputs that are not regular
files (a FIFO, a symlink to /dev/zero), oversized or over-nested sidecars.

A call that could block runs in a thread joined with a timeout (a FIFO's
blocked reader is then released by opening its other end); a read that could
never end runs in a child process under a memory and time limit.
"""

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from snmf_jax import _io

IO_FILE = Path(_io.__file__)


def bounded(fn, seconds=10.0, fifo=None):
    """fn()'s result or exception; fails the test if it is still running after
    `seconds` (first releasing a reader blocked on `fifo`)."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - reported to the test
            out["value"] = e

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(seconds)
    if th.is_alive():
        if fifo is not None:  # let the blocked open return so the thread can end
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"still blocked after {seconds} s")
    return out["value"]


def refused(value, *words):
    assert isinstance(value, (ValueError, OSError)), f"not refused: {value!r:.200}"
    msg = str(value).lower()
    assert any(w in msg for w in words), msg


def isolated(code: str, timeout: float = 60.0):
    """Runs `code` in a child python with 1.5 GB of address space (the module
    _io loaded from this tree as `_io`); returns (returncode, output)."""
    prelude = ("import importlib.util, resource, sys\n"
               "resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))\n"
               f"spec = importlib.util.spec_from_file_location('_io', {str(IO_FILE)!r})\n"
               "_io = importlib.util.module_from_spec(spec); spec.loader.exec_module(_io)\n")

    try:
        p = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "timed out"
    return p.returncode, p.stdout + p.stderr


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


# -- JSON sidecars ----------------------------------------------------------------

def test_json_fifo_is_refused(fifo):
    refused(bounded(lambda: _io.read_json(fifo), fifo=fifo), "named pipe", "regular file")


def test_json_symlink_to_dev_zero_is_refused():
    code, out = isolated(
        "import os, tempfile\n"
        "d = tempfile.mkdtemp(); p = os.path.join(d, 'x.json'); os.symlink('/dev/zero', p)\n"
        "try:\n    _io.read_json(p)\nexcept ValueError as e:\n    print('REFUSED', e)\n")
    assert code == 0 and "REFUSED" in out and "device" in out, out[-500:]


def test_json_sidecar_over_the_size_bound_is_refused_unread():
    code, out = isolated(
        "import os, tempfile\n"
        "d = tempfile.mkdtemp(); p = os.path.join(d, 'big.json')\n"
        "with open(p, 'wb') as f:\n    f.write(b'['); f.truncate(1 << 30)  # sparse 1 GiB\n"
        "try:\n    _io.read_json(p)\nexcept ValueError as e:\n    print('REFUSED', e)\n",
        timeout=60)
    assert code == 0 and "REFUSED" in out and "bytes" in out, out[-500:]


def test_json_nested_too_deep_is_a_value_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    refused(bounded(lambda: _io.read_json(path)), "deep", "nested")


def test_store_manifest_fifo_is_refused(tmp_path):
    from snmf_jax.activations import ActivationStore
    (tmp_path / "store").mkdir()
    os.mkfifo(tmp_path / "store" / "manifest.json")
    refused(bounded(lambda: ActivationStore(tmp_path / "store"),
                    fifo=tmp_path / "store" / "manifest.json"), "named pipe", "regular file")


def test_interpret_json_inputs_fifo_is_refused(fifo):
    """--descriptions/--steered/--scores/--tree are read by one reader."""
    from snmf_jax.cli import interpret
    refused(bounded(lambda: interpret._json(str(fifo), "descriptions"), fifo=fifo),  # noqa: SLF001
            "named pipe", "regular file")


# -- safetensors ------------------------------------------------------------------

def test_safetensors_fifo_is_refused():
    # In a child: the safetensors reader blocks in open() holding the GIL, so a
    # thread of this process could not even time out.
    code, out = isolated(
        "import os, tempfile\n"
        "d = tempfile.mkdtemp(); p = os.path.join(d, 'x.safetensors'); os.mkfifo(p)\n"
        "for f in (_io.load_arrays, _io.read_metadata):\n"
        "    try:\n        f(p)\n    except ValueError as e:\n        print('REFUSED', e)\n",
        timeout=30)
    assert code == 0 and out.count("REFUSED") == 2 and "named pipe" in out, out[-500:]


def test_saved_result_whose_file_is_a_fifo_is_refused(tmp_path):
    from snmf_jax.factorize import SNMFResult
    (tmp_path / "res").mkdir()
    os.mkfifo(tmp_path / "res" / "snmf.safetensors")
    refused(bounded(lambda: SNMFResult.load(tmp_path / "res"),  # refused, not blocked
                    fifo=tmp_path / "res" / "snmf.safetensors"), "named pipe", "regular file",
            "no snmf result")


def test_model_folder_with_a_fifo_shard_is_refused(tmp_path):
    from snmf_jax.models import load_model
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
        "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2, "vocab_size": 10, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 16}))
    os.mkfifo(folder / "weights.safetensors")
    refused(bounded(lambda: load_model(folder, tokenizer=False, progress=False),
                    fifo=folder / "weights.safetensors"), "named pipe", "regular file")


# -- GGUF ---------------------------------------------------------------------------

def _gguf(kv: bytes, n_kv: int = 1) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, n_kv) + kv + b"\0" * 32


def _key(name: bytes) -> bytes:
    return struct.pack("<Q", len(name)) + name


def test_gguf_fifo_is_refused(fifo):
    from snmf_jax.models._gguf import read_gguf
    refused(bounded(lambda: read_gguf(fifo), fifo=fifo), "named pipe")


def test_gguf_deeply_nested_arrays_are_refused(tmp_path):
    from snmf_jax.models._gguf import GGUFError, read_gguf
    depth = 50_000
    kv = _key(b"deep") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * depth \
        + struct.pack("<IQ", 0, 0)
    path = tmp_path / "deep.gguf"
    path.write_bytes(_gguf(kv))
    value = bounded(lambda: read_gguf(path))
    assert isinstance(value, GGUFError) and "deep" in str(value), repr(value)[:300]


def test_gguf_nested_array_count_beyond_the_file_is_refused(tmp_path):
    from snmf_jax.models._gguf import GGUFError, read_gguf
    kv = _key(b"wide") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1 << 60)
    path = tmp_path / "wide.gguf"
    path.write_bytes(_gguf(kv))
    value = bounded(lambda: read_gguf(path))
    assert isinstance(value, GGUFError), repr(value)[:300]


def test_regular_small_json_still_reads(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text('{"a": [1, 2]}')
    link = tmp_path / "link.json"
    link.symlink_to(path)
    assert _io.read_json(path) == _io.read_json(link) == {"a": [1, 2]}


def test_config_file_that_is_a_fifo_is_refused_without_blocking(tmp_path, capsys):
    """`--config` on a FIFO would block forever in read_text; it is one line now."""
    from snmf_jax.cli import main
    fifo = tmp_path / "run.toml"
    os.mkfifo(fifo)
    assert main(["--config", str(fifo), "fit", "x", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "config file" in err and "not a regular file" in err, err
