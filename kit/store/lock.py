"""Who may write a run dir: one trainer per fold directory, and one process at a time checking and writing the
run's setup. A second process gets a clear error instead of overwriting checkpoints or the run's config.

The lock file's content (the holder's pid) is written only once the holder has passed every check (`claim`), so a
command refused after taking a lock leaves an existing lock file byte-identical.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from kit.core.errors import KitError


class FileLock:
    """An exclusive flock on `path`; the OS drops it when the holder exits, even on SIGKILL. `created` says whether
    this lock made the file (so a refused command can remove what it added)."""

    def __init__(self, path: Path, busy: str):
        self.path, self.busy = Path(path), busy
        self.fd = None
        self.created = False

    def __enter__(self):
        self.created = not self.path.exists()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            self.fd = None
            raise KitError(self.busy.format(holder=holder)) from None
        return self

    def claim(self) -> None:
        """Record the holder's pid, for the message another process gets."""
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        return False


def fold_lock(fold_dir: Path) -> FileLock:
    return FileLock(fold_dir / ".lock", f"{fold_dir} is being trained by another process (pid {{holder}}); wait for "
                                        f"it to finish or stop it, or train into another --run-dir")


def setup_lock(run_dir: Path) -> FileLock:
    return FileLock(run_dir / ".lock", f"another process (pid {{holder}}) is checking or writing the setup of "
                                       f"{run_dir}; try again in a moment")


def held(path: Path) -> bool:
    """Whether another process holds the lock at `path` now (changes nothing: no file is created or written)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)                # closing drops a lock this probe took
    return False
