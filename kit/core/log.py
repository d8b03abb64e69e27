"""The kit's terminal output goes through stdlib logging (logger "kit" and its children), so a notebook or a
server can silence or redirect it; the entry points install the handler below, which prints bare messages to
stdout exactly as the command-line tools always have."""
from __future__ import annotations

import logging
import os
import sys


class _Stdout(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time of the call (pytest's capture, a redirected notebook)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _):
        pass


def configure(level: int = logging.INFO) -> None:
    """Print the kit's messages to stdout. Under torchrun only rank 0 speaks (others keep errors only)."""
    logger = logging.getLogger("kit")
    if not any(isinstance(h, _Stdout) for h in logger.handlers):
        handler = _Stdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level if os.environ.get("RANK", "0") == "0" else logging.ERROR)
    logger.propagate = False        # libraries that configure the root logger (onnxruntime does) must not echo it
