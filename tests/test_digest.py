"""The one digest module: layouts that files already written depend on, and
array digests that tell shapes and dtypes apart."""

import numpy as np

from snmf_jax import _digest, _io

# Digests of the layouts as written before they were merged into _digest
# (checkpoint identities, result/checkpoint headers, store identities):
# a change here would stop existing files from verifying or resuming.
_ARRAY = "652dc1dd6efc14afe5079b61ccbc901027a1f60997b43a228e6f89de1453380c"
_ARRAYS = "ea22d5761efbcbb023a8d0796b58b91f353ab8d563f01f5315fc47f7f0b3a06a"
_JSON = "8d649bbf310a2c5e7614c45ad65b237def10e2789f9501515c19c61816c322ef"


def test_persisted_layouts_unchanged():
    assert _digest.array_sha256(np.arange(6, dtype=np.float32).reshape(2, 3)) == _ARRAY
    assert _digest.arrays_digest({"a": np.arange(3, dtype=np.int32),
                                  "b": np.ones((2, 2), np.float16)}) == _ARRAYS
    assert _digest.sha256_json([0, 4, 8]) == _JSON


def test_array_digest_tells_shape_and_dtype_apart():
    x = np.arange(12, dtype=np.float32)
    seen = {_digest.array_sha256(x), _digest.array_sha256(x.reshape(3, 4)),
            _digest.array_sha256(x.reshape(4, 3)), _digest.array_sha256(x.view(np.int32))}
    assert len(seen) == 4


def test_array_digest_streams_blocks_like_one_read(monkeypatch):
    x = np.random.default_rng(0).random((50, 7)).astype(np.float32)
    whole = _digest.array_sha256(x)
    monkeypatch.setattr(_digest, "_BLOCK_BYTES", 28 * 3)  # 3 rows per block
    assert _digest.array_sha256(x) == whole


def test_file_and_written_safetensors_digest_agree(tmp_path):
    p = tmp_path / "a.safetensors"
    got = _io.write_safetensors(p, {"x": np.ones((3, 2), np.float32)})
    assert got == _digest.file_sha256(p) == _digest.sha256_bytes(p.read_bytes())
