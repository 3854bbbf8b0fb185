"""The `snmf-jax` command: one subcommand per stage of the pipeline."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module exposes `register(subparsers)`, which adds its subcommand and
# sets `func` on the parser's defaults.
_SUBCOMMAND_MODULES = (
    "snmf_jax._demo",
    "snmf_jax.factorize._cli",
    "snmf_jax.factorize._hierarchy_cli",
    "snmf_jax.activations._cli",
    "snmf_jax.steer._cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snmf-jax",
        description="Interpretable MLP features of language models by semi-NMF.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
