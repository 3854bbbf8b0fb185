"""The one "arrays + header + digest" file pair: _io.save_verified / load_verified."""

from pathlib import Path

import numpy as np
import pytest

from snmf_jax import _io
from snmf_jax.factorize._hierarchy_result import HierarchicalResult

DATA = Path(__file__).parent / "data"


def _arrays():
    return {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1.5, -2.0])}


@pytest.mark.parametrize("key", [None, "snmf_jax"])
def test_round_trip_both_layouts(tmp_path, key):
    f = tmp_path / "x.safetensors"
    header = {"format": "snmf_jax.test/1", "settings": "{\"k\": 1}" if key is None else {"k": 1}}
    written = _io.save_verified(f, _arrays(), header, key=key)
    seen = []
    got, arrays = _io.load_verified(f, "snmf_jax.test/1", "test file", key=key, check=seen.append)
    assert got == written and seen == [written]
    assert written["arrays_sha256"] == _io.arrays_digest(_arrays())
    for k, v in _arrays().items():
        np.testing.assert_array_equal(arrays[k], v)


@pytest.mark.parametrize("key", [None, "snmf_jax"])
def test_other_format_or_tampered_arrays_fail(tmp_path, key):
    f = tmp_path / "x.safetensors"
    _io.save_verified(f, _arrays(), {"format": "snmf_jax.test/1"}, key=key)
    with pytest.raises(ValueError, match="unsupported format 'snmf_jax.test/1'"):
        _io.load_verified(f, "snmf_jax.test/2", "test file", key=key)
    # Same header, other arrays: the recorded digest no longer matches.
    meta = _io.read_metadata(f)
    _io.write_safetensors(f, {**_arrays(), "a": np.zeros((2, 3), np.float32)}, meta)
    with pytest.raises(ValueError, match="do not match the SHA-256"):
        _io.load_verified(f, "snmf_jax.test/1", "test file", key=key)


def test_check_refuses_before_arrays_are_read(tmp_path):
    f = tmp_path / "x.safetensors"
    _io.save_verified(f, _arrays(), {"format": "snmf_jax.test/1", "data": "other"})

    def refuse(header):
        raise ValueError(f"written for {header['data']}")

    with pytest.raises(ValueError, match="written for other"):
        _io.load_verified(f, "snmf_jax.test/1", "test file", check=refuse)


def test_header_needs_format_and_string_fields(tmp_path):
    with pytest.raises(ValueError, match="format"):
        _io.save_verified(tmp_path / "x.safetensors", _arrays(), {"settings": "{}"})
    with pytest.raises(TypeError, match="'settings'"):
        _io.save_verified(tmp_path / "x.safetensors", _arrays(),
                          {"format": "f/1", "settings": {"k": 1}})


def test_hierarchy_written_by_main_still_loads():
    # tests/data/main_hierarchy was written by HierarchicalResult.save at main
    # fa77d50, before it used save_verified.
    h = HierarchicalResult.load(DATA / "main_hierarchy")
    assert h.ranks == (3, 2) and h.links[0].shape == (3, 2)
    assert h.metadata == {"written_by": "main fa77d50"}
    np.testing.assert_array_equal(h.finetune_losses, [0.5, 0.25])
    info, arrays = _io.load_verified(DATA / "main_hierarchy" / "hierarchy.safetensors",
                                     "snmf_jax.hierarchy/1", "hierarchy", key="snmf_jax")
    assert info["ranks"] == [3, 2] and set(arrays) >= {"features.0", "features.1", "links.0"}


def test_hierarchy_round_trip_is_bit_identical(tmp_path):
    h = HierarchicalResult.load(DATA / "main_hierarchy")
    g = HierarchicalResult.load(h.save(tmp_path / "h"))
    for x, y in zip(h.features + h.links + h.losses, g.features + g.links + g.losses):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    assert (tmp_path / "h" / "hierarchy.json").read_text() == \
        (DATA / "main_hierarchy" / "hierarchy.json").read_text()
