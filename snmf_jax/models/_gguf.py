"""GGUF files (llama.cpp): the header reader.

The header is parsed here directly (`read_gguf`): `gguf.GGUFReader` builds a
numpy view per metadata array element, which takes 4-20 s on a 50k-260k
token vocabulary, while the same parse with `struct` takes a fraction of a
second. Tensor data is memory-mapped; `GGUFFile.tensor` dequantizes one
tensor (`_gguf_quant`). The mapping onto the module tree (ModelConfig and
weights) is in `_gguf_params`.
"""

from __future__ import annotations

import dataclasses
import math
import mmap
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from snmf_jax import _io
from snmf_jax.models._gguf_quant import dequantize

_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32

# GGUF metadata value types -> struct format (scalars) or special handling.
_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f",
                   7: "?", 10: "Q", 11: "q", 12: "d"}
_NUMPY_TYPES = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32,
                5: np.int32, 6: np.float32, 7: np.bool_, 10: np.uint64,
                11: np.int64, 12: np.float64}
_STRING, _ARRAY = 8, 9
# llama.cpp writes arrays of scalars or strings (depth 1); arrays of arrays are
# legal but unused. Deeper nesting is refused before it exhausts the stack.
MAX_ARRAY_DEPTH = 4


class GGUFError(ValueError):
    """A GGUF file that cannot be read (not GGUF, truncated, corrupted,
    unsupported)."""


@dataclasses.dataclass(frozen=True)
class GGUFTensorInfo:
    """Where one tensor lives in the file.

    Attributes:
      name: llama.cpp tensor name, e.g. "blk.0.attn_q.weight".
      shape: numpy order (ggml's dimensions reversed).
      ggml_type: a `gguf.GGMLQuantizationType`.
      offset: absolute byte offset of the data in the file.
      nbytes: size of the data in bytes.
    """

    name: str
    shape: tuple[int, ...]
    ggml_type: Any
    offset: int
    nbytes: int


class GGUFFile:
    """A parsed GGUF file: metadata dict, tensor directory, memory-mapped data.

    Attributes:
      path: the file.
      metadata: key -> value. Strings are str, numeric arrays np.ndarray,
        string arrays list[str].
      tensors: name -> GGUFTensorInfo, in file order.
    """

    def __init__(self, path: Path, metadata: dict[str, Any],
                 tensors: dict[str, GGUFTensorInfo], buffer: mmap.mmap):
        self.path = path
        self.metadata = metadata
        self.tensors = tensors
        self._buffer = buffer

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def arch_key(self, key: str, default: Any = None) -> Any:
        """Value of "{architecture}.{key}", or default."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def tensor(self, name: str, dtype=np.float32) -> np.ndarray:
        """One tensor, dequantized, in numpy order.

        Args:
          name: llama.cpp tensor name.
          dtype: numpy dtype of the result (dequantization runs in float32).

        Returns:
          A new array (not a view of the file) of shape `self.tensors[name].shape`.
        """
        if name not in self.tensors:
            raise GGUFError(f"{self.path}: no tensor named {name!r}")
        info = self.tensors[name]
        raw = np.frombuffer(self._buffer, np.uint8, count=info.nbytes, offset=info.offset)
        try:
            return dequantize(raw, info.ggml_type, info.shape, dtype)
        except NotImplementedError as e:
            raise GGUFError(f"{self.path}: tensor {name!r}: {e}") from None

    def close(self) -> None:
        """Releases the memory map (arrays returned by `tensor` are copies)."""
        try:
            self._buffer.close()
        except BufferError:  # a caller still holds a view; the GC closes it later
            pass

    def __repr__(self) -> str:
        return (f"GGUFFile({str(self.path)!r}, architecture={self.architecture!r}, "
                f"{len(self.metadata)} keys, {len(self.tensors)} tensors)")


class _Cursor:
    """Bounds-checked little-endian reads from a buffer."""

    def __init__(self, buf, path: Path):
        self.buf, self.pos, self.size, self.path = buf, 0, len(buf), path

    def _need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise GGUFError(
                f"{self.path} is truncated or corrupted: reading {what} needs "
                f"{n} bytes at offset {self.pos}, but the file has {self.size} bytes")

    def scalar(self, fmt: str, what: str):
        n = struct.calcsize("<" + fmt)
        self._need(n, what)
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += n
        return value

    def string(self, what: str) -> str:
        n = self.scalar("Q", what)
        self._need(n, what)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype == 6:
            # float32: its shortest decimal (1e-05, not 9.999999747378752e-06),
            # which is the value the original config stated.
            return float(str(np.float32(self.scalar("f", what))))
        if vtype in _SCALAR_FORMATS:
            return self.scalar(_SCALAR_FORMATS[vtype], what)
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise GGUFError(f"{self.path} is corrupted: {what} nests arrays more than "
                                f"{MAX_ARRAY_DEPTH} deep")
            etype = self.scalar("I", what)
            count = self.scalar("Q", what)
            if etype in _NUMPY_TYPES:
                dtype = np.dtype(_NUMPY_TYPES[etype]).newbyteorder("<")
                self._need(count * dtype.itemsize, what)
                arr = np.frombuffer(self.buf, dtype, count=count, offset=self.pos).copy()
                self.pos += count * dtype.itemsize
                return arr.astype(dtype.newbyteorder("="))
            if etype == _STRING:
                self._need(8 * count, what)  # every string has an 8-byte length
                return [self.string(what) for _ in range(count)]
            if etype == _ARRAY:
                self._need(12 * count, what)  # every array has a type and a count
                return [self.value(_ARRAY, what, depth + 1) for _ in range(count)]
            raise GGUFError(f"{self.path} is corrupted: {what} is an array of "
                            f"unknown GGUF value type {etype}")
        raise GGUFError(f"{self.path} is corrupted: {what} has unknown GGUF value "
                        f"type {vtype}")


def read_gguf(path: str | os.PathLike) -> GGUFFile:
    """Parses a GGUF file's header and memory-maps its tensor data.

    Args:
      path: a .gguf file (format version 2 or 3, little-endian).

    Returns:
      A GGUFFile.

    Raises:
      FileNotFoundError: the file does not exist.
      GGUFError: not a GGUF file, truncated or corrupted, or unsupported.
    """
    import gguf  # deferred: importing gguf costs ~0.3 s

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    try:
        _io.regular_file(path)  # a FIFO would block the open, a device never end
    except ValueError as e:
        raise GGUFError(str(e)) from None
    size = path.stat().st_size
    if size < 24:
        raise GGUFError(f"{path} is not a GGUF file: it has only {size} bytes")
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        if buf[:4] != _MAGIC:
            raise GGUFError(f"{path} is not a GGUF file: it starts with "
                            f"{bytes(buf[:4])!r}, expected {_MAGIC!r}")
        cur = _Cursor(buf, path)
        cur.pos = 4
        version = cur.scalar("I", "the version")
        if version not in (2, 3):
            hint = " (big-endian files are not supported)" if version > 0xFFFF else ""
            raise GGUFError(f"{path}: unsupported GGUF version {version}; expected 2 or 3{hint}")
        n_tensors = cur.scalar("Q", "the tensor count")
        n_kv = cur.scalar("Q", "the metadata count")
        if n_tensors > size or n_kv > size:
            raise GGUFError(f"{path} is corrupted: header claims {n_tensors} tensors "
                            f"and {n_kv} metadata entries in a {size}-byte file")
        metadata: dict[str, Any] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            vtype = cur.scalar("I", f"the type of metadata {key!r}")
            metadata[key] = cur.value(vtype, f"metadata {key!r}")

        infos = []
        for i in range(n_tensors):
            name = cur.string(f"tensor name #{i}")
            n_dims = cur.scalar("I", f"tensor {name!r} rank")
            if n_dims > 8:
                raise GGUFError(f"{path} is corrupted: tensor {name!r} has rank {n_dims}")
            dims = [cur.scalar("Q", f"tensor {name!r} shape") for _ in range(n_dims)]
            type_id = cur.scalar("I", f"tensor {name!r} type")
            offset = cur.scalar("Q", f"tensor {name!r} offset")
            try:
                qtype = gguf.GGMLQuantizationType(type_id)
                block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            except (ValueError, KeyError):
                raise GGUFError(f"{path}: tensor {name!r} has unknown ggml type "
                                f"{type_id}") from None
            if dims and dims[0] % block:
                raise GGUFError(f"{path} is corrupted: tensor {name!r} row length "
                                f"{dims[0]} is not a multiple of the {qtype.name} "
                                f"block size {block}")
            n_rows = math.prod(dims[1:])  # Python ints: corrupt dims cannot overflow
            nbytes = (dims[0] // block if dims else 1) * type_size * n_rows
            infos.append((name, tuple(int(d) for d in reversed(dims)), qtype, offset, nbytes))

        alignment = int(metadata.get("general.alignment", _DEFAULT_ALIGNMENT))
        if alignment <= 0 or alignment & (alignment - 1):
            raise GGUFError(f"{path} is corrupted: general.alignment is {alignment}")
        data_start = -(-cur.pos // alignment) * alignment
        tensors: dict[str, GGUFTensorInfo] = {}
        for name, shape, qtype, offset, nbytes in infos:
            if name in tensors:
                raise GGUFError(f"{path} is corrupted: tensor {name!r} appears twice")
            start = data_start + offset
            if start + nbytes > size:
                raise GGUFError(
                    f"{path} is truncated: tensor {name!r} needs bytes "
                    f"{start}..{start + nbytes} but the file has {size} bytes")
            tensors[name] = GGUFTensorInfo(name, shape, qtype, start, nbytes)
    except GGUFError:
        buf.close()
        raise
    except (struct.error, ValueError, OverflowError, MemoryError) as e:
        buf.close()
        raise GGUFError(f"{path} is corrupted: {type(e).__name__}: {e}") from None
    return GGUFFile(path, metadata, tensors, buf)
