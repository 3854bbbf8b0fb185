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
    from the field (metadata "help", optional "choices", "type", "flag")."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        kw: dict[str, Any] = {"dest": f.name, "help": meta.pop("help", None)}
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        hint = hints[f.name]
        if hint is bool:
            kw["action"] = "store_false" if default else "store_true"
        elif typing.get_origin(hint) is tuple:
            kw.update(action="append", default=None, type=str)
            kw["help"] = f"{kw['help']} (repeatable; default {list(default)!r})"
        else:
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            kw["type"] = meta.pop("type", args[0] if args else hint)
            kw["default"] = default
            if "choices" in meta:
                kw["choices"] = meta.pop("choices")
            kw["help"] = f"{kw['help']} (default: {default})"
        flag = meta.pop("flag", "--" + f.name.replace("_", "-"))
        parser.add_argument(flag, **kw)


def from_args(cls, args: argparse.Namespace):
    """The options of parsed `add_dataclass_arguments` flags."""
    values = {}
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name)
        if v is None and typing.get_origin(typing.get_type_hints(cls)[f.name]) is tuple:
            continue  # an unrepeated repeatable flag keeps the field's default
        values[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**values)


def signature_default(fn, name: str):
    """The default of `fn`'s keyword `name` (flags reuse library defaults)."""
    return inspect.signature(fn).parameters[name].default


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds one `--flag` per FitConfig field, with its default and help."""
    from snmf_jax.factorize import FitConfig  # pylint: disable=g-import-not-at-top
    for f in dataclasses.fields(FitConfig):
        meta = dict(f.metadata)
        flag = "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = {"help": meta.pop("help"), "dest": f.name}
        if "choices" in meta:
            kw["choices"] = meta.pop("choices")
        if f.default is dataclasses.MISSING:
            kw["required"] = True
            kw["type"] = int
        else:
            kw["default"] = f.default
            kw["type"] = meta.pop("type", type(f.default))
        parser.add_argument(flag, **kw)


def fit_options_from_args(args: argparse.Namespace):
    """The FitConfig of parsed `add_fit_arguments` flags (patience 0 means None)."""
    from snmf_jax.factorize import FitConfig  # pylint: disable=g-import-not-at-top
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(FitConfig)}
    if values["patience"] == 0:
        values["patience"] = None
    return FitConfig(**values)
