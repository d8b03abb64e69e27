"""What every command-line entry point does around its main(): logging to stdout, and user errors as one line
on stderr with exit code 2 (no traceback). Torch-free and dependency-free, so the deployed predictor has it."""
from __future__ import annotations

import os
import sys
from typing import Callable

from kit.core import log
from kit.core.errors import EXIT_USER_ERROR, KitError


def main_guard(main: Callable[[], object]) -> None:
    log.configure()
    try:
        main()
    except KitError as e:
        if os.environ.get("RANK", "0") == "0":      # under torchrun every rank stops; one says why
            print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
