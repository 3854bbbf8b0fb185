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
    from the field (metadata "help", optional "choices", "type", "flag"); a
    field without a default is a required flag."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        kw: dict[str, Any] = {"dest": f.name, "help": meta.pop("help", None)}
        required = (f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING)
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
            if "choices" in meta:
                kw["choices"] = meta.pop("choices")
            if required:
                kw["required"] = True
            else:
                kw["default"] = default
                # %(default)s: argparse fills it in (and ArgumentDefaultsHelpFormatter
                # then adds no second copy).
                kw["help"] = f"{kw['help']} (default: %(default)s)"
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
    add_dataclass_arguments(parser, FitConfig)


def fit_options_from_args(args: argparse.Namespace):
    """The FitConfig of parsed `add_fit_arguments` flags (patience 0 means None)."""
    from snmf_jax.factorize import FitConfig  # pylint: disable=g-import-not-at-top
    if args.patience == 0:
        args = argparse.Namespace(**{**vars(args), "patience": None})
    return from_args(FitConfig, args)
