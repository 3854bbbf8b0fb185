"""The `snmf-jax` command: one subcommand per stage of the pipeline.

Errors: subcommands raise (ValueError for bad settings, FileNotFoundError for
missing inputs) rather than exit; any error a subcommand raises is printed as one line,
`snmf-jax <command>: error: <message>`, and the exit status is 1 (2 for bad
command-line syntax, as argparse does). `--debug` before the subcommand, or
`SNMF_JAX_DEBUG=1` in the environment, re-raises instead so the full traceback
shows.

Config files: `snmf-jax --config run.toml fit ...` or `snmf-jax fit --config
run.toml ...` reads a TOML file with one table per subcommand whose keys are
the flags' dest names (`--max-iter` is `max_iter`); flags given on the command
line override the file. Works for every subcommand without per-command code:
the file's values become the subparser's defaults, checked against each
flag's type and choices. An unknown key or section, or a value of the wrong
type, is a one-line error naming the key and the file.

    [export]
    model = "smollm2-135m"
    layers = [6]
    [fit]
    rank = 100
    sparsity = 0.01
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib

from snmf_jax import _checks
from snmf_jax import _io
from snmf_jax._text import printable
from snmf_jax.cli import demo, doctor, evaluate, export, fit, hierarchy, interpret, steer

# Each module exposes `register(subparsers)`, which adds its subcommand and
# sets `func` on the parser's defaults.
_SUBCOMMANDS = (demo, fit, hierarchy, export, steer, interpret, evaluate, doctor)

DEBUG_ENV = "SNMF_JAX_DEBUG"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, not usage + error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see --help)\n")


def _one_line(message: str) -> str:
    # Messages echo file text (names, labels, keys): escape its control characters.
    return printable(" ".join(str(message).split()))


def _version_line() -> str:
    """`snmf-jax X (jax Y, jaxlib Z, Python W)`; `snmf-jax doctor` tells the rest."""
    import importlib.metadata as md
    import platform

    from snmf_jax import __version__

    def v(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "missing"

    return (f"snmf-jax {__version__} (jax {v('jax')}, jaxlib {v('jaxlib')}, "
            f"Python {platform.python_version()})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="snmf-jax",
        description="Interpretable MLP features of language models by semi-NMF.")
    parser.add_argument("--version", action="version", version=_version_line(),
                        help="print the versions of snmf-jax, JAX and Python and exit")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of an error (or set {DEBUG_ENV}=1)")
    parser.add_argument("--config", default=None, metavar="TOML",
                        help="TOML file with a [<subcommand>] table of flag values "
                             "(dest names); command-line flags override it")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in _SUBCOMMANDS:
        module.register(sub)
    for p in sub.choices.values():  # every subcommand takes --config too
        p.add_argument("--config", dest="sub_config", default=None, metavar="TOML",
                       help="TOML file with a [<subcommand>] table of flag values "
                            "(dest names); command-line flags override it")
    return parser


class ConfigError(ValueError):
    """A config file that cannot be applied (names the file and the key)."""


_SKIP = ("help", "sub_config", "config", "debug", "command")


def _check_value(where: str, key: str, value, action: argparse.Action):
    """The config value as the flag would have parsed it (or ConfigError)."""
    def fail(expected: str):
        raise ConfigError(f"{where}: {key} must be {expected}; got {value!r}")

    if action.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            fail("true or false")
        return value  # the dest's value itself (store_false: false means the flag given)
    many = isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*")  # noqa
    if many and not isinstance(value, list):
        value = [value]
    items = value if many else [value]
    out = []
    for v in items:
        if isinstance(v, (dict, list)):
            fail("a string or number" + (" (or a list of them)" if many else ""))
        t = action.type
        if t is int and not _checks.is_int(v):
            fail("an integer")
        if t is float and not _checks.is_real(v):
            fail("a number")
        if t in (None, str) and not isinstance(v, str):
            fail("a string")
        if t not in (None, str, int, float):
            try:
                v = t(str(v))
            except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
                raise ConfigError(f"{where}: {key}: {_one_line(e)}") from None
        elif t is float:
            v = float(v)
        if action.choices is not None and v not in action.choices:
            fail(f"one of {list(action.choices)}")
        out.append(v)
    return out if many else out[0]


def apply_config(sub: argparse.ArgumentParser, command: str, path: str,
                 commands) -> None:
    """Sets `sub`'s defaults from the [command] table of the TOML file `path`."""
    try:
        # A regular file of bounded size (a FIFO would block, /dev/zero never
        # ends); utf-8-sig: a byte-order mark (editors on Windows write one) is not TOML.
        raw = _io.read_bytes(path, 1 << 20, "config file")
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist") from None
    except (OSError, ValueError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"config file {path!r} is not valid TOML: {_one_line(e)}") from None
    for name, table in data.items():
        if name not in commands:
            raise ConfigError(f"config file {path!r}: unknown section or top-level key "
                              f"{name!r}; expected tables named after subcommands "
                              f"{sorted(commands)}")
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path!r}: {name!r} must be a table [{name}]")
    for name, table in data.items():  # every table's keys, not only this command's
        known = {a.dest for a in commands[name]._actions} - set(_SKIP)  # noqa: SLF001
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"config file {path!r} [{name}]: unknown key {unknown[0]!r}; "
                              f"expected one of {sorted(known)}")
    table = data.get(command, {})
    actions = {a.dest: a for a in sub._actions if a.dest not in _SKIP}  # noqa: SLF001
    where = f"config file {path!r} [{command}]"
    values = {}
    for key, value in table.items():
        if key not in actions:
            raise ConfigError(f"{where}: unknown key {key!r}; expected one of "
                              f"{sorted(actions)}")
        action = actions[key]
        values[key] = _check_value(where, key, value, action)
        if action.option_strings:
            action.required = False  # given by the file
        else:
            action.nargs = "?"  # a positional given by the file
    sub.set_defaults(**values)


def _describe(error: BaseException) -> str:
    """One line naming what went wrong; the type only where it adds meaning."""
    message = _one_line(error) if str(error) else ""
    if isinstance(error, KeyError) and message:
        message = message.strip("'\"")
    plain = (ValueError, TypeError, FileNotFoundError, FileExistsError, KeyError)
    if isinstance(error, plain) and message:
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _scan(argv: list[str], commands) -> tuple[str | None, str | None]:
    """The subcommand and the --config value of argv, without parsing it."""
    command = config = None
    it = iter(range(len(argv)))
    for i in it:
        a = argv[i]
        if a == "--":
            break
        if a == "--config" and i + 1 < len(argv):
            config = argv[i + 1]
            next(it, None)
        elif a.startswith("--config="):
            config = a.split("=", 1)[1]
        elif command is None and a in commands:
            command = a
    return command, config


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    subs = next(a for a in parser._actions  # noqa: SLF001
                if isinstance(a, argparse._SubParsersAction)).choices  # noqa: SLF001
    command, config = _scan(argv, subs)
    if command is not None and config is not None:
        try:  # before parsing: the file may supply required flags
            apply_config(subs[command], command, config, subs)
        except ConfigError as e:
            print(f"snmf-jax {command}: error: {_one_line(e)}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)  # flags on the command line override the file
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
