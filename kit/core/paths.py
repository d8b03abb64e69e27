"""Outputs never overwrite inputs. Every command that writes names what it reads and the folders that are not
its to write into, then checks each output path before it writes anything:

  - an output is none of the command's input files, compared after resolving symlinks and `..`, and by device and
    inode, so a hard link to an input is caught too;
  - an output lies in no protected folder (the competition folder, a run dir), except the file names the kit
    itself writes there (a run dir's ensemble.onnx); and in no run dir at all, however the command was led there (a
    folder holding config.yaml and task.json or classes.json is a run dir, named by --run-dir or not);
  - two outputs of one command are two different files;
  - a path given for a file is no folder, a path given for a folder is no file, and no path is empty.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from kit.core.errors import KitError


def resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve(strict=False)


def _identity(path: Path) -> Optional[tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def inside(path: Path, folder: Path) -> bool:
    path, folder = resolved(path), resolved(folder)
    return path == folder or folder in path.parents


RUN_FILES = ("task.json", "classes.json")                 # beside config.yaml: a run dir (kit.store.rundir)
TWINS = ("int8", "fp16")                                  # a graph's lower-precision twins (kit.export.twin)


def chosen_twin(int8: bool, fp16: bool) -> Optional[str]:
    """The lower-precision twin a command's --int8 / --fp16 asked for: int8, fp16 or None; both is an error."""
    if int8 and fp16:
        raise KitError("--int8 and --fp16 ask for two different twins of the graph; pass one (int8 for CPUs, fp16 "
                       "for GPUs)")
    return "int8" if int8 else "fp16" if fp16 else None


def twin_path(graph: Path, kind: str) -> Path:
    """Where a graph's `kind` twin lies: beside it, ensemble.onnx -> ensemble.int8.onnx / ensemble.fp16.onnx."""
    return graph.with_name(f"{graph.stem}.{kind}.onnx")


# what commands other than train.py write into a run dir: the exported graph and its twins
RUN_OWN_NAMES = ("ensemble.onnx", *(twin_path(Path("ensemble.onnx"), kind).name for kind in TWINS))


def run_dir_of(path: Path) -> Optional[Path]:
    """The run dir `path` lies in (the nearest folder above it holding a run's config.yaml and task or classes file),
    or None."""
    for folder in resolved(path).parents:
        if (folder / "config.yaml").is_file() and any((folder / name).is_file() for name in RUN_FILES):
            return folder
    return None


def require_path(flag: str, value, kind: str = "file") -> Path:
    """`value` as a Path, refusing an empty string and a folder given for a file (or a file for a folder)."""
    if value is None or not str(value).strip():
        raise KitError(f"{flag} is empty; give a {kind} path")
    path = Path(value)
    if kind == "file" and path.is_dir():
        raise KitError(f"{flag} {path} is a folder; give a file path, e.g. {path / 'submission.csv'}")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise KitError(f"{flag} {path} is a file; give a folder path")
    return path


@dataclass
class Outputs:
    """What one command reads, and the checks of what it is about to write."""
    inputs: list[Path] = field(default_factory=list)
    protected: list[tuple[Path, str, tuple[str, ...]]] = field(default_factory=list)
    claimed: dict[Path, str] = field(default_factory=dict)

    def reads(self, *paths: str | os.PathLike | None) -> "Outputs":
        self.inputs += [Path(p) for p in paths if p]
        return self

    def protects(self, folder: str | os.PathLike | None, what: str, allow: Iterable[str] = ()) -> "Outputs":
        """No output inside `folder` (`what` names it in the message), but for files named in `allow` directly in
        it."""
        if folder:
            self.protected.append((Path(folder), what, tuple(allow)))
        return self

    def check(self, flag: str, value, kind: str = "file") -> Optional[Path]:
        """`value` (None: not given) as a path this command may write, or a one-line refusal."""
        if value is None:
            return None
        path = require_path(flag, value, kind)
        target = resolved(path)
        for source in self.inputs:
            if target == resolved(source) or (_identity(target) is not None and _identity(target) == _identity(source)):
                raise KitError(f"{flag} {path} is one of this command's inputs ({source}); writing it would destroy "
                               f"it. Choose another path")
        for folder, what, allow in self.protected:
            if inside(target, folder) and not (target.parent == resolved(folder) and target.name in allow):
                raise KitError(f"{flag} {path} lies inside {what} {folder}, which this command reads; write it "
                               f"elsewhere (e.g. submissions/)")
            if kind == "file" and not inside(target, folder) and _links_into(target, folder):
                raise KitError(f"{flag} {path} is a hard link to a file inside {what} {folder}; writing it would "
                               f"change that file. Choose another path")
        run = run_dir_of(target)
        if run is not None and not (kind == "file" and target.parent == run and target.name in RUN_OWN_NAMES):
            raise KitError(f"{flag} {path} lies inside the run dir {run} (a trained run's files: its OOF predictions, "
                           f"checkpoints and reports, which CV, blends and distillation read); write it elsewhere "
                           f"(e.g. submissions/)")
        if target in self.claimed:
            raise KitError(f"{flag} and {self.claimed[target]} name the same file {path}; give each its own path")
        self.claimed[target] = flag
        return path


def _links_into(target: Path, folder: Path) -> bool:
    """Whether `target` is a hard link to a file anywhere under `folder` (walked only for an existing file with
    more than one link)."""
    try:
        st = os.stat(target)
    except OSError:
        return False
    if st.st_nlink < 2 or not folder.is_dir():
        return False
    identity = (st.st_dev, st.st_ino)
    for root, _, files in os.walk(folder):
        for name in files:
            if _identity(Path(root) / name) == identity:
                return True
    return False
