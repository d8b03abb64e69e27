"""Shared plumbing of the entry points: user errors become one line on stderr and exit code 2."""
from __future__ import annotations

import sys
from typing import Callable

from .errors import EXIT_USER_ERROR, KitError


def main_guard(main: Callable[[], object]) -> None:
    try:
        main()
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
