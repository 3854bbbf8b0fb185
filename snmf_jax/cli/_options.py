"""Argparse flags generated from a frozen options dataclass (one definition
of every name, default and help)."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import typing
from typing import Any


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One `--flag` per field of `cls`: dest = field name, default and help
    from the field, so a flag can never restate a library default.

    Field metadata: "help"; optional "choices", "type" (the flag's parser),
    "flag" (another spelling) and "none" (the CLI spelling of None, e.g.
    patience 0). A field without a default is a required flag.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        kw: dict[str, Any] = {"dest": f.name, "help": meta.pop("help", None)}
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = f.default if f.default is not dataclasses.MISSING else (
            None if required else f.default_factory())
        hint = hints[f.name]
        if hint is bool:
            kw["action"] = "store_false" if default else "store_true"
        elif typing.get_origin(hint) is tuple:
            kw.update(action="append", default=None, type=str)
            kw["help"] = f"{kw['help']} (repeatable; default {list(default)!r})"
        else:
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            kw["type"] = meta.pop("type", args[0] if args else hint)
            if "choices" in meta:
                kw["choices"] = meta.pop("choices")
            if required:
                kw["required"] = True
            else:
                kw["default"] = default
                # %(default)s: argparse shows the parser's default, also after
                # a set_defaults, and ArgumentDefaultsHelpFormatter adds no second one.
                kw["help"] = f"{kw['help']} (default: %(default)s)"
        flag = meta.pop("flag", "--" + f.name.replace("_", "-"))
        parser.add_argument(flag, **kw)


def from_args(cls, args: argparse.Namespace):
    """The options of parsed `add_dataclass_arguments` flags (validated by `cls`)."""
    values = {}
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name)
        if v is None and typing.get_origin(typing.get_type_hints(cls)[f.name]) is tuple:
            continue  # an unrepeated repeatable flag keeps the field's default
        if "none" in f.metadata and v == f.metadata["none"]:
            v = None
        values[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**values)


def field_default(cls, name: str):
    """The default of dataclass `cls`'s field `name` (flags reuse library defaults)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default if f.default_factory is dataclasses.MISSING else f.default_factory()


def field_choices(cls, name: str) -> tuple:
    """The choices of dataclass `cls`'s field `name` (its "choices" metadata)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return tuple(f.metadata["choices"])


def signature_default(fn, name: str):
    """The default of `fn`'s keyword `name` (flags reuse library defaults)."""
    return inspect.signature(fn).parameters[name].default
