"""`snmf-jax fit`: flags derived from FitConfig, same result as the Python API."""

import numpy as np
import pytest

import snmf_jax as sj
from snmf_jax import _io
from snmf_jax.cli import main
from snmf_jax.testing import low_rank_data


def _x(n=90, d=20, seed=0):
    return low_rank_data(n, d, 3, seed=seed, noise=0)


def test_cli_fit_equals_python_fit(tmp_path, capsys):
    x = _x()
    _io.save_arrays(tmp_path / "x.safetensors", {"X": x})
    assert main(["fit", str(tmp_path / "x.safetensors"), "--rank", "3", "--sparsity", "0.3",
                 "--max-iter", "12", "--patience", "0", "--chunk-size", "5", "--no-progress",
                 "--out", str(tmp_path / "out")]) == 0
    got = sj.SNMFResult.load(tmp_path / "out")
    ref = sj.fit(x, 3, sparsity=0.3, max_iter=12, patience=None, progress=False)
    np.testing.assert_array_equal(got.losses, ref.losses)
    np.testing.assert_array_equal(got.features, ref.features)
    np.testing.assert_array_equal(got.codes, ref.codes)
    assert got.settings == {**ref.settings}


@pytest.mark.parametrize("flags, match", [
    (["--sparsity", "0"], "sparsity"), (["--reg", "nan"], "reg"),
    (["--chunk-size", "0"], "chunk_size"),
])
def test_cli_bad_options_fail_before_reading_input(tmp_path, flags, match):
    with pytest.raises(ValueError, match=match):
        main(["--debug", "fit", str(tmp_path / "missing.safetensors"), "--rank", "3",
              "--out", str(tmp_path / "o"), *flags])


def test_cli_process_flags_need_a_coordinator(tmp_path):
    with pytest.raises(ValueError, match="need --coordinator"):
        main(["--debug", "fit", str(tmp_path / "x"), "--rank", "3", "--out", str(tmp_path / "o"),
              "--num-processes", "2", "--process-id", "0"])
