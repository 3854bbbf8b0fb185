"""The one overwrite policy of every command that writes.

`check_outputs` runs before any work (before a model loads or a fit starts)
and refuses, with one line naming the flag:

- an output that is one of the command's inputs, or inside an input folder,
  or the same path as another output (`--neuronpedia X --out X`);
- an output whose folder cannot be created or written, or whose name is
  longer than the file system allows (found today only after a fit);
- an output that already holds a file the command would write, unless the
  user passed `--overwrite` (then the command replaces exactly those files,
  atomically; it deletes nothing else).

Deleting is never part of the policy: what a command replaces it rewrites
by name, and the names are the command's own constants, never names read
from a file. (Stores that must drop stale chunks do it through their own
verified manifests: `activations._writer.remove_store_files`.)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

__all__ = ["Output", "check_outputs"]


@dataclasses.dataclass(frozen=True)
class Output:
    """One thing a command writes.

    Attributes:
      flag: the flag naming it, for messages ("--out").
      path: the path given.
      files: the names the command writes inside the folder `path`; None when
        `path` is itself the file written.
    """

    flag: str
    path: str | os.PathLike
    files: Sequence[str] | None = None


def _resolved(p) -> Path:
    # realpath: a symlink to an input is that input.
    return Path(os.path.realpath(os.path.expanduser(os.fspath(p))))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _check_writable(o: Output, p: Path) -> None:
    """Names fit the file system; the first existing ancestor is a writable folder."""
    try:
        name_max = os.pathconf("/", "PC_NAME_MAX")
        path_max = os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    names = list(p.parts) + list(o.files or ())
    # Atomic writes add a dot prefix and a random suffix to each name.
    long = [n for n in names if len(os.fsencode(n)) + 20 > name_max]
    if long:
        raise ValueError(f"{o.flag}: the name {long[0][:40]!r}... is longer than this file "
                         f"system allows ({name_max} bytes, less room for a temporary suffix)")
    if len(os.fsencode(str(p))) + 64 > path_max:
        raise ValueError(f"{o.flag}: the path is longer than this file system allows "
                         f"({path_max} bytes)")
    probe = p
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir() and (probe != p or o.files is not None):
        where = (f"{os.fspath(o.path)!r} exists and is not a directory" if probe == p else
                 f"{str(probe)!r}, above {os.fspath(o.path)!r}, is not a directory")
        raise ValueError(f"{o.flag} must be a folder; {where}")
    folder = probe if probe.is_dir() else probe.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{o.flag} {os.fspath(o.path)!r}: {str(folder)!r} is not writable")


def check_outputs(outputs: Iterable[Output], *, inputs: Mapping[str, object] = (),
                  overwrite: bool = False) -> None:
    """Refuses outputs that would lose data or fail late (see the module docstring).

    Args:
      outputs: what the command writes.
      inputs: flag -> path (or None) of what it reads.
      overwrite: the user's `--overwrite`: existing files may be replaced.

    Raises:
      ValueError: an output collides with an input or another output, or
        cannot be written.
      FileExistsError: an output exists and `overwrite` is false.
    """
    outputs = [o for o in outputs if o.path is not None]
    ins = {flag: _resolved(p) for flag, p in dict(inputs).items() if p is not None}
    seen: dict[Path, str] = {}
    for o in outputs:
        p = _resolved(o.path)
        targets = [p] if o.files is None else [p / f for f in o.files]
        _check_writable(o, p)
        for flag, q in ins.items():
            if _inside(p, q) or any(t == q for t in targets):
                raise ValueError(f"{o.flag} {os.fspath(o.path)!r} is {flag} or inside it; "
                                 "a command never writes over its own input")
        for q, flag in seen.items():
            if _inside(p, q) or _inside(q, p):
                raise ValueError(f"{o.flag} and {flag} name the same path "
                                 f"({os.fspath(o.path)!r}); give each its own")
        seen[p] = o.flag
        if o.files is None and p.is_dir():
            raise ValueError(f"{o.flag} {os.fspath(o.path)!r} is a folder; it must name a file")
        existing = [t for t in targets if t.exists() or t.is_symlink()]
        if existing and not overwrite:
            raise FileExistsError(f"{o.flag} {os.fspath(o.path)!r}: {str(existing[0])!r} "
                                  "exists; pass --overwrite to replace it")
