"""Dequantization of GGUF tensor data (every ggml type gguf-py knows)."""

from __future__ import annotations

import numpy as np


def dequantize(raw: np.ndarray, qtype: int, shape: tuple[int, ...], dtype=np.float32
               ) -> np.ndarray:
    """One tensor's bytes as a new float array (not a view of the file).

    Args:
      raw: (nbytes,) uint8 tensor data.
      qtype: the ggml type (gguf.GGMLQuantizationType value).
      shape: numpy shape of the tensor.
      dtype: numpy dtype of the result (dequantization runs in float32).

    Returns:
      An array of `shape` and `dtype`.

    Raises:
      NotImplementedError: gguf-py cannot dequantize this type.
    """
    import gguf  # deferred: importing gguf costs ~0.3 s

    Q = gguf.GGMLQuantizationType
    qtype = Q(qtype)
    direct = {Q.F32: np.float32, Q.F16: np.float16, Q.F64: np.float64,
              Q.I8: np.int8, Q.I16: np.int16, Q.I32: np.int32, Q.I64: np.int64}
    if qtype in direct:
        # A copy: the result must outlive the memory map.
        return np.array(raw.view(direct[qtype]).reshape(shape), dtype=dtype)
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = raw.reshape(-1, type_size)  # (n_blocks, bytes per block)
    out = np.empty((blocks.shape[0], block), np.float32)  # (n_blocks, block)
    # Chunks of ~256k values: gguf-py's numpy kernels make several
    # full-size temporaries, which is ~5x slower than staying in cache.
    step = max(1, (1 << 18) // block)
    for start in range(0, blocks.shape[0], step):
        chunk = blocks[start:start + step]
        try:
            if qtype == Q.Q8_0:
                _dequantize_q8_0(chunk, out[start:start + step])
            else:
                # One flat row: gguf-py loops in Python over groups of rows.
                out[start:start + step] = gguf.quants.dequantize(
                    chunk.reshape(-1), qtype).reshape(-1, block)
        except NotImplementedError as e:
            raise NotImplementedError(
                f"ggml type {qtype.name} cannot be dequantized by gguf-py: {e}") from None
    return np.asarray(out.reshape(shape), dtype=dtype)


def _dequantize_q8_0(blocks: np.ndarray, out: np.ndarray) -> None:
    """ggml Q8_0: per block of 32, an fp16 scale then 32 int8 codes.

    Args:
      blocks: (n, 34) uint8.
      out: (n, 32) float32, written in place.
    """
    out[...] = blocks[:, 2:].view(np.int8)
    out *= blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (n, 1)
