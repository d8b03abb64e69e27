"""Shared plumbing of the entry points: user errors become one line on stderr and exit code 2."""
from __future__ import annotations

import os
import sys
from typing import Callable

from .errors import EXIT_USER_ERROR, KitError


def main_guard(main: Callable[[], object]) -> None:
    try:
        main()
    except KitError as e:
        if os.environ.get("RANK", "0") == "0":      # under torchrun every rank stops; one says why
            print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
