"""Write-then-rename, so a crash never leaves a half-written artifact behind (the old version survives).

The temp file is fsynced before the rename and the directory after it, so after a power cut the path holds
either the old or the new file, complete. A full disk is reported with the file and the space it needed.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from kit.core.errors import KitError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(path: Path) -> None:
    """The temporaries (.NAME.tmp<pid>*: a writer's files, a build's folder) that writers of `path` killed mid-write
    left beside it, when that process is gone (SIGKILL skips every cleanup)."""
    for tmp in path.parent.glob(f".{path.name}.tmp*"):
        owner = re.match(rf"\.{re.escape(path.name)}\.tmp(\d+)", tmp.name)    # also a writer's side files
        if owner and not _alive(int(owner.group(1))):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


def writable(directory: str | os.PathLike) -> bool:
    """Whether files can be created in `directory` (or in its nearest existing parent): tried, not guessed
    from permission bits, which say nothing about read-only mounts (/kaggle/input) or root."""
    directory = Path(directory)
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".kit-write-test.")
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _disk_full(path: Path, tmp: Path) -> KitError:
    written = tmp.stat().st_size if tmp.exists() else 0
    free = shutil.disk_usage(path.parent).free
    return KitError(f"no space left on the device while writing {path} (it needs more than the "
                    f"{written / 2**20:.1f} MB written so far; {free / 2**20:.1f} MB free); free some space and run "
                    f"again. Nothing was half-written: "
                    f"{path} " + ("keeps its previous version" if path.exists() else "was not created"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success fsync it and rename it over `path`, else delete it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KitError(f"cannot create the folder of {path}: {e.strerror}; choose a writable location") from None
    remove_orphans(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise _disk_full(path, tmp) from None
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise KitError(f"cannot write {path}: {e.strerror}; choose a writable location") from None
            raise
        except RuntimeError as e:           # torch.save wraps the OSError of a full disk in a RuntimeError
            if "unexpected pos" in str(e) or "No space left" in str(e):
                raise _disk_full(path, tmp) from None
            raise
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary name beside `path` and rename it to `path` at the end, so a failure leaves
    nothing behind and a retry starts clean. `path` must not exist, or be an empty folder."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise KitError(f"{path} exists and is not an empty folder; choose a new --out folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(path)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp{os.getpid()}."))
    except OSError as e:
        raise KitError(f"cannot create a folder beside {path}: {e.strerror}; choose a writable location") from None
    try:
        yield tmp
        if path.is_dir():
            path.rmdir()                    # the empty folder the user made for it
        os.chmod(tmp, 0o777 & ~current_umask())     # mkdtemp's 0700 would hide the folder from a static server
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:                    # a full disk, a read-only place: one line; the partial folder goes
        raise KitError(f"cannot write {path}: {e.strerror or e}{' (the disk is full)' if e.errno == 28 else ''}; "
                       f"free space or choose another --out") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
