"""Atomic file writes: safetensors for arrays, JSON for everything else.

Every write goes to a temporary file in the destination folder and is then
renamed over the target, so a reader (or a crash) never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from safetensors.numpy import load, load_file
from safetensors import SafetensorError, safe_open

# Digests live in _digest; these two are re-exported for callers of _io.
from snmf_jax._digest import arrays_digest, sha256_bytes, sha256_pieces

__all__ = ["atomic_open", "atomic_write_bytes", "write_json", "read_json", "write_safetensors",
           "save_arrays", "load_arrays", "parse_json", "verified_arrays", "save_verified",
           "load_verified", "reading_safetensors", "load_bytes", "read_metadata", "read_shape",
           "sha256_bytes", "arrays_digest", "MAX_JSON_BYTES",
           "regular_file", "read_bytes"]

# JSON sidecars (manifests, headers, configs, trees, descriptions) are small;
# a bound stops a crafted or mistaken file from exhausting memory.
MAX_JSON_BYTES = 64 << 20

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISDIR, "a folder"))


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike):
    """Opens a temp file beside `path` for binary writing; on success it is
    fsync'ed and renamed over `path`, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; a written file gets the mode any
        # other write would give it (0666 less the umask).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask (read by setting and restoring it, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically (temp file + fsync + rename)."""
    with atomic_open(path) as f:
        f.write(data)


def write_json(path: str | os.PathLike, obj: Any, *,
               default: Callable[[Any], Any] | None = None) -> None:
    """Writes `obj` as JSON, atomically: the one JSON file format of the package.

    Indented, keys sorted (files diff cleanly), UTF-8 rather than \\u escapes (a
    document text stays its own size, under the readers' MAX_JSON_BYTES), and
    a final newline.

    Args:
      path: the file to write.
      obj: a JSON-able value.
      default: called on values json cannot encode (e.g. `str` for free-form
        dataset metadata that must not make an export fail); None: they raise.
    """
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=default)
    atomic_write_bytes(path, (text + "\n").encode())


def _not_regular(path, mode: int) -> ValueError:
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return ValueError(f"{path} is {kind}, not a regular file; refusing to read it (a pipe "
                      f"or device can block forever or never end)")


def regular_file(path: str | os.PathLike) -> Path:
    """`path`, checked to be a regular file (symlinks followed) before anyone
    opens it: opening a FIFO blocks until a writer comes, and /dev/zero never
    ends.

    Raises:
      FileNotFoundError: nothing at `path`.
      ValueError: a FIFO, device, socket or folder.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    return Path(path)


def read_bytes(path: str | os.PathLike, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `max_bytes`, else a ValueError.

    The file is opened without blocking (a FIFO cannot hold the open) and
    checked on the open descriptor, so a swap between check and read cannot
    slip a device in.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        if st.st_size > max_bytes:
            raise ValueError(f"{path}: {st.st_size} bytes is more than a {what} may have "
                             f"({max_bytes} bytes); refusing to read it")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew after the check
        raise ValueError(f"{path}: more than a {what} may have ({max_bytes} bytes); "
                         "refusing to read it")
    return data


def read_json(path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parses a JSON file; invalid JSON fails with one line naming the file.

    Args:
      path: a regular file (a FIFO or device is refused before it is read).
      max_bytes: larger files are refused unread.
    """
    data = read_bytes(path, max_bytes, "JSON file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return parse_json(text, path)


def parse_json(text: str, where: str | os.PathLike) -> Any:
    """Parses JSON text read from `where` (a file, or 'file: header field');
    invalid JSON is a ValueError naming it, not a bare JSONDecodeError."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply to read") from None


@contextlib.contextmanager
def reading_safetensors(path: str | os.PathLike):
    """Turns a safetensors parse error (truncated, garbage, empty file) into a
    ValueError naming the file; the raw SafetensorError names none."""
    try:
        yield
    except SafetensorError as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e}); it is truncated "
                         "or corrupt") from None


_ST_DTYPES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32",
              np.dtype(np.float16): "F16", np.dtype(np.int64): "I64",
              np.dtype(np.int32): "I32", np.dtype(np.uint8): "U8",
              np.dtype(np.bool_): "BOOL"}


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> str:
    """Writes a safetensors file atomically, straight from the arrays' memory.

    Unlike `safetensors.numpy.save_file` this never builds the whole file in
    memory (no extra copy of the chunk). Tensors are laid out in sorted name
    order, so equal inputs give byte-identical files.

    Args:
      path: destination; written to a temp file beside it, then renamed.
      tensors: name -> C-contiguous little-endian array.
      metadata: string -> string metadata of the header.

    Returns:
      The SHA-256 (hex) of the file's bytes.
    """
    header: dict[str, Any] = {}
    offset = 0
    names = sorted(tensors)
    arrays = []
    for name in names:
        # np.ascontiguousarray would turn a 0-d array into a 1-d one.
        a = np.asarray(tensors[name], order="C")
        if a.dtype not in _ST_DTYPES:
            raise ValueError(f"tensor {name!r}: unsupported dtype {a.dtype}")
        header[name] = {"dtype": _ST_DTYPES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    if metadata:
        header["__metadata__"] = dict(metadata)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)  # tensor data starts 8-byte aligned
    pieces = (len(hb).to_bytes(8, "little"), hb,
              *(memoryview(a).cast("B") for a in arrays if a.size))
    with atomic_open(path) as f:
        for piece in pieces:
            f.write(piece)
    return sha256_pieces(pieces)


def save_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                metadata: Mapping[str, str] | None = None) -> None:
    """Saves named arrays (and string metadata) as one safetensors file, atomically."""
    write_safetensors(path, arrays, metadata)


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Loads every array of a safetensors file (a damaged file fails naming it)."""
    regular_file(path)
    with reading_safetensors(path):
        return load_file(str(path))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file, without reading its arrays."""
    regular_file(path)
    with reading_safetensors(path), safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata() or {})


def load_bytes(data: bytes) -> dict[str, np.ndarray]:
    """Every array of a safetensors file already read into memory."""
    return load(data)


def read_shape(path: str | os.PathLike, name: str) -> list[int]:
    """The shape of one tensor of a safetensors file, without reading it."""
    regular_file(path)
    with reading_safetensors(path), safe_open(str(path), framework="numpy") as f:
        return list(f.get_slice(name).get_shape())


def verified_arrays(path: str | os.PathLike, digest: str | None) -> dict[str, np.ndarray]:
    """Every array of a safetensors file, checked against the SHA-256 its
    writer recorded (`arrays_digest`); a missing or different digest fails
    naming the file."""
    arrays = load_arrays(path)
    if not digest:
        raise ValueError(f"{path}: no SHA-256 of its arrays in the header, so it cannot be "
                         "verified; it was not written by this version of snmf_jax")
    if arrays_digest(arrays) != digest:
        raise ValueError(f"{path}: the arrays do not match the SHA-256 recorded in its "
                         "header; the file is corrupt")
    return arrays


def save_verified(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                  header: Mapping[str, Any], *, key: str | None = None) -> dict[str, Any]:
    """Saves arrays with a versioned header that records their SHA-256, atomically.

    The one writer of the package's "arrays + header + digest" files (results,
    hierarchies, checkpoints); `load_verified` reads them back. Two header
    layouts exist on disk, both kept so that files already written still load:

    - `key` given (results): the whole header is one JSON string under
      `metadata[key]`, with "format" and "arrays_sha256" inside it.
    - `key` None (checkpoints): the header's entries are the metadata's own
      string fields, "arrays_sha256" among them.

    Args:
      path: the safetensors file.
      arrays: name -> array.
      header: must hold "format" (a versioned string, e.g. "snmf_jax.x/1");
        JSON-able values with `key`, strings without.

    Returns:
      The header as written (with "arrays_sha256"), e.g. for a JSON sidecar.
    """
    if not isinstance(header.get("format"), str):
        raise ValueError(f"{path}: a verified file's header needs a format string")
    written = {**header, "arrays_sha256": arrays_digest(arrays)}
    if key is None:
        bad = [k for k, v in written.items() if not isinstance(v, str)]
        if bad:
            raise TypeError(f"{path}: header field {bad[0]!r} must be a string without key=")
        write_safetensors(path, arrays, written)
    else:
        write_safetensors(path, arrays, {key: json.dumps(written)})
    return written


def load_verified(path: str | os.PathLike, fmt: str, what: str, *, key: str | None = None,
                  check: Callable[[dict[str, Any]], None] | None = None,
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Reads a `save_verified` file: its header, then its arrays checked against it.

    Args:
      path: the safetensors file.
      fmt: the format string expected in the header; any other is refused.
      what: what the file is, for messages ("snmf_jax result").
      key: the layout `save_verified` was given.
      check: called with the header before any array is read (a checkpoint
        refuses other data or settings without reading its arrays).

    Returns:
      (header: the parsed JSON with `key`, else the string fields as written;
      arrays, verified against the header's "arrays_sha256").
    """
    meta = read_metadata(path)
    if key is None:
        header: Any = meta
    elif key not in meta:
        raise ValueError(f"{path} is a safetensors file but not an {what}")
    else:
        header = parse_json(meta[key], f"{path} (header)")
    got = header.get("format") if isinstance(header, dict) else header
    if got != fmt:
        raise ValueError(f"{path}: unsupported format {got!r}; expected {fmt!r} (an {what})")
    if check is not None:
        check(header)
    return header, verified_arrays(path, header.get("arrays_sha256"))
