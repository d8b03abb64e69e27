"""What every command-line entry point does around its main(): logging to stdout, user errors as one line on
stderr with exit code 2 (no traceback), and an argument parser whose mistakes are such errors too. Torch-free
and dependency-free, so the deployed predictor has it."""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

from kit.core import log
from kit.core.errors import EXIT_USER_ERROR, KitError

_IMPORTED = time.time()


def process_started() -> float:
    """When this process started (time.time() scale), from /proc on Linux; elsewhere when this module was imported,
    which entry points do first. A --time-budget counts the start-up (imports, reading the data) from here."""
    try:
        with open("/proc/self/stat") as f:
            ticks = float(f.read().rsplit(")", 1)[1].split()[19])        # start time, clock ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return min(time.time() - age, _IMPORTED)
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED


def main_guard(main: Callable[[], object]) -> None:
    log.configure()
    try:
        main()
    except KitError as e:
        if os.environ.get("RANK", "0") == "0":      # under torchrun every rank stops; one says why
            print("error: " + " ".join(str(e).split("\n")), file=sys.stderr)      # one line, whatever it quotes
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are KitErrors: one `error:` line (and exit 2 through main_guard), no usage dump. A
    `python -m kit.<name>` command is named so in its usage and errors (not `<name>.py`)."""

    def __init__(self, *args, **kwargs):
        script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
        if "prog" not in kwargs and script is not None and script.parent.name == "kit" and script.suffix == ".py":
            kwargs["prog"] = f"python -m kit.{script.stem}"
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise KitError(f"{message} (see {self.prog} --help)")


def number(low: float | None = None, high: float | None = None, kind: type = float):
    """An argparse type: a finite number of `kind` in [low, high] (inf and nan are refused)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            span = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
            raise argparse.ArgumentTypeError(f"{text!r} is outside {span}")
        return value
    return parse


def nonempty(text: str) -> str:
    """An argparse type for paths and names: an empty string is refused (it would mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("it is empty")
    return text


PORT = number(1, 65535, int)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([hms]?)")


def parse_duration(text: str, bare_unit: str = "h") -> float:
    """'9h', '540m', '90s', '1h30m', or a bare number in `bare_unit` -> seconds; anything else is refused."""
    text = (text or "").strip().lower()
    parts = _DURATION.findall(text)
    if not text or "".join(f"{n}{u}" for n, u in parts) != text.replace(" ", "") or \
            (len(parts) > 1 and not all(u for _, u in parts)):
        raise KitError(f"{text!r} is not a duration; write it like 9h, 540m, 90s or 1h30m")
    seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u or bare_unit] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise KitError(f"{text!r} is not a positive duration")
    return seconds


# --- a command's flags from its request dataclass: one place for each default (as train.py's come from Config) ---

def option(default: Any = None, help: str = "", *, parse: Callable | None = None, choices=None, flag: str | None = None,
           required: bool = False, positional: bool = False, nargs: str | None = None, metavar: str | None = None):
    """A request field that is also a command-line flag (add_flags). A list field is a repeatable flag (`--run-dir A
    --run-dir B`) unless `nargs` is given; `flag` renames it (run_dirs -> --run-dir)."""
    meta = {"help": help, "parse": parse, "choices": choices, "flag": flag, "required": required,
            "positional": positional, "nargs": nargs, "metavar": metavar}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _base(annotation) -> str:
    """Optional[int] -> 'int', list[str] -> 'list', whether the annotation is a type or (under `from __future__
    import annotations`) its text."""
    plain = isinstance(annotation, type) and not getattr(annotation, "__args__", None)       # int, not list[int]
    text = annotation.__name__ if plain else str(annotation)
    text = text.replace("typing.", "").replace("Optional[", "").replace(" | None", "").rstrip("]")
    return text.split("[")[0]


def add_flags(parser, request: type, both_ways: bool = False) -> None:
    """One flag per field of `request` made with option(), on an argparse parser or group. Every flag defaults to
    None ("not given"), so the dataclass's default is the only one (request_of fills it in); help says what it is.
    A switch is off unless given (--int8), or with `both_ways` (settings a YAML file may have turned on) --x/--no-x."""
    for f in dataclasses.fields(request):
        if "parse" not in f.metadata:
            continue
        m, kind = f.metadata, _base(f.type)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        text = " ".join(map(str, default)) if isinstance(default, list) else default
        unset = default is None or default is False or default == []          # (0 is a default worth showing)
        shown = "" if unset or m["required"] else f" (default {text})"
        name = m["flag"] or f.name
        kwargs: dict = {"help": m["help"] + shown, "default": None}
        if kind == "bool":           # a switch that is off unless given; one that may be on also gets --no-NAME
            kwargs["action"] = "store_true" if default is False and not both_ways else argparse.BooleanOptionalAction
        else:
            if m["choices"] is None:
                kwargs["metavar"] = name.upper().replace("-", "_")
            kwargs["type"] = m["parse"] or {"int": int, "float": float}.get(kind, nonempty)
            kwargs.update({k: m[k] for k in ("choices", "metavar", "nargs") if m[k] is not None})
            if kind in ("list", "Paths") and m["nargs"] is None:
                kwargs["action"] = "append"
        if m["positional"]:
            parser.add_argument(f.name, **kwargs)
        else:
            parser.add_argument("--" + name.replace("_", "-"), dest=f.name,
                                required=m["required"], **kwargs)


def request_of(request: type, args: argparse.Namespace):
    """The request a command line asked for: the flags given, the dataclass's defaults for the rest."""
    return request(**{f.name: getattr(args, f.name) for f in dataclasses.fields(request)
                      if getattr(args, f.name, None) is not None})


def parse_request(request: type, argv=None, **parser_kwargs):
    """Parse a command line into `request` (a dataclass of option() fields), with the kit's Parser."""
    parser = Parser(formatter_class=argparse.RawDescriptionHelpFormatter, **parser_kwargs)
    add_flags(parser, request)
    return request_of(request, parser.parse_args(argv))
