"""Headless Chromium for checking and timing the page (tests, benchmarks).

Each call starts a fresh browser with a throwaway profile and no network
services; the page's own script applies a search from the URL fragment
(``#q=...``), so `dump_dom` returns the DOM after the search ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def _run(args: list[str], timeout: float) -> str:
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium binary found (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="snmf-chromium-") as profile:
        out = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args],
                             capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"chromium exited with {out.returncode}: {out.stderr[-2000:]}")
    return out.stdout


def _url(html_path, fragment: str) -> str:
    url = Path(html_path).resolve().as_uri()
    return url + ("#" + fragment if fragment else "")


def dump_dom(html_path, fragment: str = "", *, timeout: float = 120,
             budget_ms: int | None = None) -> str:
    """The page's DOM (serialized HTML) after its scripts ran on load.

    budget_ms: also let this much virtual time pass first, so that events
    queued on load (an image's error handler, timers) have run.
    """
    budget = [f"--virtual-time-budget={int(budget_ms)}"] if budget_ms else []
    return _run([*budget, "--dump-dom", _url(html_path, fragment)], timeout)


def screenshot(html_path, png_path, fragment: str = "", *, size=(1400, 1000),
               timeout: float = 120) -> Path:
    """Saves a PNG screenshot of the page at `size` (width, height)."""
    png_path = Path(png_path).resolve()
    _run([f"--screenshot={png_path}", f"--window-size={size[0]},{size[1]}",
          _url(html_path, fragment)], timeout)
    if not png_path.exists():
        raise RuntimeError(f"chromium wrote no screenshot to {png_path}")
    return png_path
