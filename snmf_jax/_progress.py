"""`bar`: the package's progress-bar setup (tqdm).

Long loops (fit iterations, chunk passes, export, calibration) take a
`progress` flag and turn it into a tqdm bar here, so the look (auto backend,
width that follows the terminal) and `progress=False` (a disabled bar: no
output at all, same calls) are decided once. (The GGUF dequantizer,
`models/_gguf_params.py`, still builds its own bar.)
"""

from __future__ import annotations

from typing import Any

__all__ = ["bar"]


def bar(total: int, *, desc: str, progress: bool = True, unit: str = "it",
        initial: int = 0, leave: bool = True, unit_scale: bool = False) -> Any:
    """A tqdm bar, disabled (prints nothing) when `progress` is False.

    Args:
      total: the number of steps.
      desc: the label shown before the bar.
      progress: show it; False returns a disabled bar with the same methods.
      unit: what one step is ("it", "chunk", "tok").
      initial: steps already done (a resumed run).
      leave: keep the finished bar on screen.
      unit_scale: show counts as 1.2M rather than 1200000 (rows, tokens).

    Returns:
      The tqdm bar (use as a context manager or close it).
    """
    # Imported here: tqdm.auto probes for notebooks, which costs import time.
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave,
                disable=not progress, dynamic_ncols=True, unit_scale=unit_scale)
