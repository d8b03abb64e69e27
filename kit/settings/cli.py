"""Command-line flags generated from Config, so the two cannot drift apart."""
from __future__ import annotations

import argparse

from kit.core.entry import nonempty
from kit.settings.config import FIELDS, MAY_BE_EMPTY, base_type

_ARG_TYPES = {"int": int, "float": float, "str": str}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Config field (--img-size for img_size, --ema/--no-ema for booleans). Every flag defaults
    to None, meaning "not given", so the YAML file and the built-in defaults stay underneath."""
    group = parser.add_argument_group("settings (kit/settings/config.py; a --config YAML file sets the same names)")
    for name, f in FIELDS.items():
        kind, help_text = base_type(name), f.metadata["help"]
        default = f.default
        help_text += "" if default is None else f" (default {default})"
        if kind == "bool":
            group.add_argument(flag(name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind == "list":
            group.add_argument(flag(name), type=float, nargs=3, metavar="X", help=help_text)
        elif kind == "Paths":
            group.add_argument(flag(name), type=nonempty, action="append", metavar="PATH", help=help_text)
        elif kind == "str" and name not in MAY_BE_EMPTY:
            group.add_argument(flag(name), type=nonempty, choices=f.metadata["choices"], help=help_text)
        else:
            group.add_argument(flag(name), type=_ARG_TYPES[kind], choices=f.metadata["choices"], help=help_text)


def config_overrides(args: argparse.Namespace) -> dict:
    """The Config fields given on the command line."""
    return {name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None}
