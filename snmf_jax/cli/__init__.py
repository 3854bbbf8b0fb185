"""The `snmf-jax` command line: the top layer of the package.

One module per subcommand (`fit`, `hierarchy`, `export`, `steer`, `interpret`,
`evaluate`, `demo`), each exposing `register(subparsers)`; `main` builds the
parser from them. No library module imports this package.
"""

from snmf_jax.cli.main import DEBUG_ENV, build_parser, main

__all__ = ["DEBUG_ENV", "build_parser", "main"]
