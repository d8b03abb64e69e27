"""One trainer per fold directory: a second process gets a clear error instead of overwriting checkpoints."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from kit.core.errors import KitError


class FoldLock:
    """An exclusive flock on `path`; the OS drops it when the holder exits, even on SIGKILL."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            raise KitError(f"{self.path.parent} is being trained by another process (pid {holder}); wait for it "
                           f"to finish or stop it, or train into another --run-dir") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        return False
