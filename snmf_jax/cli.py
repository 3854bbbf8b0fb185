"""The `snmf-jax` command: one subcommand per stage of the pipeline.

Errors: subcommands raise (ValueError for bad settings, FileNotFoundError for
missing inputs) rather than exit; any error a subcommand raises is printed as one line,
`snmf-jax <command>: error: <message>`, and the exit status is 1 (2 for bad
command-line syntax, as argparse does). `--debug` before the subcommand, or
`SNMF_JAX_DEBUG=1` in the environment, re-raises instead so the full traceback
shows.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Each module exposes `register(subparsers)`, which adds its subcommand and
# sets `func` on the parser's defaults.
_SUBCOMMAND_MODULES = (
    "snmf_jax._demo",
    "snmf_jax.factorize._cli",
    "snmf_jax.factorize._hierarchy_cli",
    "snmf_jax.activations._cli",
    "snmf_jax.steer._cli",
    "snmf_jax.interpret._cli",
    "snmf_jax.evaluate._cli",
)

DEBUG_ENV = "SNMF_JAX_DEBUG"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, not usage + error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see --help)\n")


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="snmf-jax",
        description="Interpretable MLP features of language models by semi-NMF.")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of an error (or set {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.register(sub)
    return parser


def _describe(error: BaseException) -> str:
    """One line naming what went wrong; the type only where it adds meaning."""
    message = _one_line(error) if str(error) else ""
    if isinstance(error, KeyError) and message:
        message = message.strip("'\"")
    plain = (ValueError, TypeError, FileNotFoundError, FileExistsError, KeyError)
    if isinstance(error, plain) and message:
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"snmf-jax {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every library error becomes one line
        if debug:
            raise
        print(f"snmf-jax {args.command}: error: {_describe(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
