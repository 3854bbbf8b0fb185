"""The command line's LLM flags (--llm-url, --llm-model, --llm-gguf), shared by
`snmf-jax evaluate --judge llm` and `snmf-jax interpret --describe`."""

from __future__ import annotations

import argparse
import contextlib
import os


def add_llm_args(p: argparse.ArgumentParser, use: str) -> None:
    """Adds the three flags; `use` names the flag that needs them (for help)."""
    p.add_argument("--llm-url", default=None, help=f"OpenAI-compatible base URL ({use})")
    p.add_argument("--llm-model", default=None, help=f"model name ({use})")
    p.add_argument("--llm-gguf", default=None,
                   help=f"({use}) instead of --llm-url: serve this chat GGUF with llama.cpp on "
                        "127.0.0.1 for the run (pip install \"llama-cpp-python[server]\")")


def check_llm_args(args: argparse.Namespace, use: str) -> None:
    """Fails before any work when the flags cannot name a server."""
    if not (args.llm_url and args.llm_model) and not args.llm_gguf:
        raise ValueError(f"{use} needs --llm-url and --llm-model, or --llm-gguf")
    if args.llm_gguf and args.llm_url:
        raise ValueError("give --llm-url or --llm-gguf, not both")
    if args.llm_gguf and not os.path.isfile(args.llm_gguf):
        raise FileNotFoundError(f"--llm-gguf: no such file {args.llm_gguf!r}")


def llm_judge(args: argparse.Namespace, stack: contextlib.ExitStack):
    """An `LLMJudge` on the flags' server (a --llm-gguf server lives as long as `stack`)."""
    from snmf_jax.evaluate import LLMClient, LLMConfig, LLMJudge, serve_gguf
    url, name = args.llm_url, args.llm_model
    if args.llm_gguf:
        url = stack.enter_context(serve_gguf(args.llm_gguf))
        name = name or os.path.basename(args.llm_gguf)
    return LLMJudge(LLMClient(LLMConfig(base_url=url, model=name)))
