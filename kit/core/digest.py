"""sha256 of files, remembered by each file's stat so that an unchanged checkpoint is not read again.

`infer.py` decides whether the exported graph is up to date from the bytes of every checkpoint and OOF file it was
made from (kit.export.infer.export_key); reading ~0.5 GB of checkpoints was most of a second call on an unchanged run.
A file's digest is reused when its device, inode, size, modification and change times (ns) all equal those recorded
with the digest. The change time (ctime) cannot be set back by any tool (`touch -d`, `cp -p` and `rsync -a` set
mtime, never ctime), so a byte changed in place under a restored mtime is read again. A file changed within
RACY_S of being hashed is not remembered (git's "racy clean" rule): the kernel stamps times at a coarse tick, so two
writes a few ms apart can share a stamp.

The cache is one JSON file, $KIT_CACHE_DIR/file-digests.json (default $XDG_CACHE_HOME/kit or ~/.cache/kit), outside
the run dirs, which may be read-only (a Kaggle dataset). Where it cannot be written, files are hashed every time.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Iterable

from kit.core import atomic
from kit.core.errors import KitError

RACY_S = 2.0
BLOCK = 1 << 22


def cache_file() -> Path:
    root = os.environ.get("KIT_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kit"
    return Path(root) / "file-digests.json"


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _load(cache: Path) -> dict:
    try:
        entries = json.loads(cache.read_text())
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError):
        return {}                    # none yet, or damaged: start again


def file_digests(paths: Iterable[str | os.PathLike]) -> list[str]:
    """The sha256 (hex) of each file, in order; read only where its stat changed since it was last hashed."""
    cache = cache_file()
    entries = _load(cache)
    digests, changed = [], False
    for path in paths:
        path = Path(os.path.abspath(path))
        stamp = _stamp(path.stat())
        entry = entries.get(str(path))
        if entry and entry.get("stat") == stamp:
            digests.append(entry["sha256"])
            continue
        started = time.time_ns()
        digests.append(sha256_of(path))
        if started - max(stamp[3], stamp[4]) > RACY_S * 1e9:
            entries[str(path)] = {"stat": stamp, "sha256": digests[-1]}
            changed = True
    if changed:
        _save(cache, entries)
    return digests


def _save(cache: Path, entries: dict) -> None:
    """Write the cache, dropping entries of files that are gone; silently nothing where it cannot be written."""
    kept = {name: entry for name, entry in entries.items() if os.path.exists(name)}
    try:
        atomic.write_text(cache, json.dumps(kept))
    except (OSError, KitError):
        pass                         # a read-only home: hash every time
