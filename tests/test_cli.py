"""The `snmf-jax` command on bad input: one line on stderr, no traceback, non-zero exit.

Every subcommand gets inputs a user gets wrong (missing files, out-of-range
settings, unknown models); each must fail before any expensive work with one
line that names what was wrong.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from snmf_jax import cli
from snmf_jax.factorize import SNMFResult

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def x_file(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"X": np.random.default_rng(0).standard_normal((40, 12)).astype(np.float32)},
              str(path))
    return path


def bad_inputs(tmp_path, x_file):
    """(argv, a fragment the one line must contain) per hostile input."""
    missing = str(tmp_path / "missing")
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(x_file.read_bytes()[:40])
    bad_store = tmp_path / "store"
    bad_store.mkdir(exist_ok=True)
    (bad_store / "manifest.json").write_text("{not json")
    truncated_result = tmp_path / "res_trunc"
    truncated_result.mkdir(exist_ok=True)
    (truncated_result / "snmf.safetensors").write_bytes(b"\x10\x00")
    one_d = tmp_path / "one_d.safetensors"  # wrong shape: X must be (tokens, neurons)
    save_file({"X": np.ones(10, np.float32)}, str(one_d))
    result_dir = tmp_path / "res"
    SNMFResult(features=np.ones((4, 12), np.float32), codes=None,
               losses=np.zeros(1, np.float32), best_iter=1, converged=True,
               settings={"rank": 4}, metadata={"layer": 1}).save(result_dir)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[fit]\nrank = 'three'\n")
    ev = ["evaluate", "--model", "smollm2-135m", "--layer", "1", "--out", str(tmp_path / "v")]
    return [
        (["fit", missing, "--out", str(tmp_path / "o"), "--rank", "3"], "missing"),
        (["fit", str(x_file), "--out", str(tmp_path / "o"), "--rank", "0"], "rank"),
        (["fit", str(x_file), "--out", str(tmp_path / "o"), "--rank", "3",
          "--sparsity", "2"], "sparsity"),
        (["fit", str(x_file), "--out", str(tmp_path / "o"), "--rank", "3", "--key", "nope"],
         "nope"),
        (["export", "--model", "no-such-model", "--layers", "1", "--out",
          str(tmp_path / "e")], "no-such-model"),
        (["export", "--model", "smollm2-135m", "--layers", "1", "--dataset",
          missing + ".jsonl", "--out", str(tmp_path / "e")], "missing.jsonl"),
        (["steer", "--model", "no-such-model", "--features", missing, "--feature", "0"],
         "missing"),
        (["interpret", "--features", missing, "--activations", missing, "--out",
          str(tmp_path / "r.html")], "missing"),
        (["hierarchy", missing, "--ranks", "4", "2", "--out", str(tmp_path / "h")], "missing"),
        (["hierarchy", str(tmp_path), "--ranks", "4", "2", "--out", str(tmp_path / "h")],
         "manifest.json"),
        # fit: settings, damaged inputs, multi-process flags without a coordinator
        (["fit", str(x_file), "--out", str(tmp_path / "o"), "--rank", "3", "--reg", "nan"],
         "reg"),
        (["fit", str(x_file), "--out", str(tmp_path / "o"), "--rank", "3", "--chunk-size",
          "0"], "chunk_size"),
        (["fit", str(truncated), "--out", str(tmp_path / "o"), "--rank", "3"], "trunc"),
        (["fit", str(x_file), "--out", str(tmp_path / "o"), "--rank", "3",
          "--num-processes", "2", "--process-id", "0"], "--coordinator"),
        (["fit", str(x_file), "--out", str(tmp_path / "o"), "--rank", "3",
          "--checkpoint-dir", str(x_file)], "not a directory"),
        (["fit", str(bad_store), "--out", str(tmp_path / "o"), "--rank", "3"],
         "manifest.json"),
        (["fit", str(x_file), "--out", str(x_file), "--rank", "3"], "not a directory"),
        # export: bad settings fail before the model loads
        (["export", "--model", "no-such-model", "--layers", "-1", "--out",
          str(tmp_path / "e")], "--layers"),
        (["export", "--model", "no-such-model", "--layers", "1", "--batch-size", "0",
          "--out", str(tmp_path / "e")], "--batch-size"),
        (["export", "--model", "no-such-model", "--layers", "1", "--chunk-rows", "0",
          "--out", str(tmp_path / "e")], "--chunk-rows"),
        (["export", "--model", "no-such-model", "--layers", "1", "--out", str(x_file)],
         "not a directory"),
        # steer: sampling settings fail before the result or the model loads
        (["steer", "--model", "m", "--features", missing, "--feature", "0", "--kl", "nan"],
         "--kl"),
        (["steer", "--model", "m", "--features", missing, "--feature", "0", "--top-p", "0"],
         "--top-p"),
        (["steer", "--model", "m", "--features", missing, "--feature", "0",
          "--temperature", "-1"], "--temperature"),
        (["steer", "--model", "m", "--features", missing, "--feature", "0",
          "--max-new-tokens", "0"], "--max-new-tokens"),
        (["steer", "--model", "m", "--features", missing, "--feature", "-2"], "--feature"),
        (["steer", "--model", "m", "--features", str(truncated_result), "--feature", "0"],
         "snmf.safetensors"),
        # interpret and hierarchy
        (["interpret", "--features", missing, "--activations", missing, "--out",
          str(tmp_path / "r.html"), "--contexts", "0"], "--contexts"),
        (["hierarchy", str(tmp_path), "--ranks", "4", "2", "--out", str(tmp_path / "h"),
          "--threshold", "nan"], "--threshold"),
        (["hierarchy", str(bad_store), "--ranks", "4", "2", "--out", str(tmp_path / "h")],
         "manifest.json"),
        (["hierarchy", str(bad_store), "--ranks", "4", "2", "--out", str(x_file)],
         "not a directory"),
        (ev + ["--dataset", missing + ".json"], "missing.json"),
        (ev + ["--methods", "snmf,pca"], "methods"),
        (ev + ["--samples", "0"], "--samples"),
        (ev + ["--targets", "0.1", "-1"], "targets"),
        (ev + ["--judge", "llm"], "--llm-url"),
        (ev + ["--judge", "llm", "--llm-gguf", missing + ".gguf"], "missing.gguf"),
        (ev + ["--judge", "llm", "--llm-gguf", str(x_file), "--llm-url", "http://127.0.0.1:1/v1"],
         "not both"),
        (ev + ["--layer", "-2"], "--layer"),
        (["evaluate", "--model", "no-such-model", "--layer", "1", "--out", str(tmp_path / "v"),
          "--no-steer"], "no-such-model"),
        (["demo", "--rank", "0"], "--rank"),
        (["demo", "--kl", "-1"], "--kl"),
        (["demo", "--sparsity", "0"], "--sparsity"),
        (["demo", "--restarts", "0"], "--restarts"),
        (["demo", "--steer", "5", "--rank", "3"], "--steer"),
        (["demo", "--model", "no-such-model", "--out", str(tmp_path / "d")], "no-such-model"),
        (["fit", str(one_d), "--out", str(tmp_path / "o"), "--rank", "3"], "X"),
        (["steer", "--model", "no-such-model", "--features", str(result_dir), "--feature",
          "99"], "--feature"),
        (["fit", str(x_file), "--out", str(tmp_path / "o"), "--config", str(bad_toml)],
         "bad.toml"),
        (["export", "--config", missing + ".toml"], "missing.toml"),
    ]


def test_every_subcommand_fails_on_bad_input_with_one_line(tmp_path, x_file, capsys):
    for argv, fragment in bad_inputs(tmp_path, x_file):
        code = cli.main(argv)
        err = capsys.readouterr().err.strip()
        lines = err.splitlines()
        assert code != 0, argv
        assert len(lines) == 1, (argv, err)
        assert "Traceback" not in err, argv
        assert lines[0].startswith(f"snmf-jax {argv[0]}"), (argv, err)
        assert fragment in lines[0], (argv, err)


def test_usage_errors_are_one_line_with_exit_2(capsys):
    for argv in (["no-such-command"], ["fit"], ["demo", "--rank", "three"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2, argv
        assert len(err.splitlines()) == 1, (argv, err)
        assert "(see --help)" in err


def test_debug_shows_the_traceback(tmp_path, x_file, monkeypatch):
    argv = ["fit", str(x_file), "--out", str(tmp_path / "o"), "--rank", "0"]
    with pytest.raises(ValueError, match="rank"):
        cli.main(["--debug", *argv])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(ValueError, match="rank"):
        cli.main(argv)


def test_the_installed_entry_point_prints_one_line(tmp_path):
    """The real process: what a user sees in a terminal, exit status included."""
    env = {k: v for k, v in os.environ.items() if k != cli.DEBUG_ENV}
    proc = subprocess.run(
        [sys.executable, "-m", "snmf_jax.cli", "demo", "--rank", "0"], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "snmf-jax demo: error: --rank must be an integer >= 1; got 0"]
