"""The run dir: the fold models of one training setup and everything derived from them. Torch-free.

  config.yaml            the resolved config of the run (kit.settings.config.Config)
  classes.json           JSON list of the model's output names (classes, tags or the target), in output order
  task.json              the task (kit.core.task.Task.to_dict: kind, names, and a regression's target scaling)
  fold<k>/config.yaml    the config fold k was trained with
  fold<k>/best.pt        best weights of fold k; fold<k>/last.pt  its resumable state (kit.store.state)
  fold<k>/oof.csv        fold k's OOF predictions; fold<k>/metrics.csv  its per-epoch history; fold<k>/kept.json
                         which epochs' weights it kept (--avg-top-k) (kit.store.oof)
  fold<k>/plan.json      the epochs fold k's --time-budget gave (kit.train.budget)
  fold<k>/.lock, fold<k>/tb/   the trainer's lock; TensorBoard logs (--tensorboard)
  full/                  the model trained on every image (--fold full): config.yaml, best.pt (its last epoch's
                         weights), last.pt, metrics.csv (no validation: val_loss and score are nan), no oof.csv
  .lock                  held while a trainer checks and writes the run's setup
  oof.csv                all folds' OOF rows (after --fold all)
  cv.md, report.csv, curves.png, confusion_matrix.png, worst.png     reports (kit.evaluate.report)
  ensemble.onnx, ensemble.{int8,fp16}.onnx                           exported ensembles (kit.export.build)

The one "same setup" rule (setup_changes) decides whether a fold may join a run dir, whether a fold may be
resumed, and whether exported folds were trained alike: every setting counts except those in RUNTIME_KEYS.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from kit.settings import config as config_mod
from kit.settings.config import Config
from kit.core.errors import KitError
from kit.core.paths import RUN_OWN_NAMES
from kit.store.oof import read_history, read_oof
from kit.core.task import Task, restore

# Settings that only decide where or how fast a run happens, or where its starting weights are read from (the
# kit cannot tell whether two sources hold the same weights); every other setting changes the trained models.
RUNTIME_KEYS = frozenset({"device", "num_workers", "save_every_steps", "run_dir", "data_dir", "pretrained",
                          "pretrained_file", "tensorboard", "tracker", "channels_last"})
_FOLD_DIR = re.compile(r"^fold(\d+)$")
FULL = "full"          # the model trained on every image: RUN/full/, beside RUN/fold<k>/


def setup_changes(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every setting outside RUNTIME_KEYS that differs, in Config order."""
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in config_mod.FIELDS
            if k not in RUNTIME_KEYS and old.get(k) != new.get(k)]


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_file = self.path / "config.yaml"
        self.classes_file = self.path / "classes.json"
        self.task_file = self.path / "task.json"
        self.oof_file = self.path / "oof.csv"

    def __str__(self) -> str:
        return str(self.path)

    def fold_dir(self, k: int | str) -> Path:
        return self.path / (f"fold{k}" if k != FULL else FULL)

    def best(self, k: int) -> Path:
        return self.fold_dir(k) / "best.pt"

    def last(self, k: int) -> Path:
        return self.fold_dir(k) / "last.pt"

    def oof(self, k: int) -> Path:
        return self.fold_dir(k) / "oof.csv"

    def history(self, k: int) -> Path:
        return self.fold_dir(k) / "metrics.csv"

    def kept(self, k: int) -> Path:
        return self.fold_dir(k) / "kept.json"

    def plan(self, k: int) -> Path:
        return self.fold_dir(k) / "plan.json"

    def fold_config_file(self, k: int) -> Path:
        return self.fold_dir(k) / "config.yaml"

    def exported(self) -> list[Path]:
        """The graphs exported into this run dir (the ensemble and its twins), those that exist."""
        return [self.path / name for name in RUN_OWN_NAMES if (self.path / name).is_file()]

    def ensemble_file(self) -> Path:
        return self.path / "ensemble.onnx"

    def folds(self, having: str = "best.pt") -> list[int]:
        """Fold numbers whose directory holds `having`."""
        if not self.path.is_dir():
            return []
        found = [int(m.group(1)) for d in self.path.iterdir() if (m := _FOLD_DIR.match(d.name))]
        return sorted(k for k in found if (self.fold_dir(k) / having).is_file())

    def config(self) -> Config:
        if not self.config_file.is_file():
            raise KitError(f"{self.path} is not a run dir (no config.yaml); train first: python train.py --fold 0")
        return config_mod.from_dict(config_mod.read_yaml(self.config_file, "run config"), str(self.config_file))

    def fold_setup(self, k: int) -> dict:
        """The settings fold k was trained with (the run's, for run dirs older than fold<k>/config.yaml)."""
        path = self.fold_config_file(k)
        return config_mod.read_yaml(path, "fold config") if path.is_file() else self.config().to_dict()

    def task(self) -> Task:
        if self.task_file.is_file():
            return restore(json.loads(self.task_file.read_text(encoding="utf-8")))
        if not self.classes_file.is_file():
            raise KitError(f"{self.path} has no classes.json; train first: python train.py --fold 0")
        return restore("multiclass", json.loads(self.classes_file.read_text(encoding="utf-8")))

    def finished(self, k: int) -> bool:
        """Whether fold k has trained every epoch its own settings asked for (or its --time-budget planned)."""
        path = self.history(k)
        if not path.is_file():
            return False
        plan = json.loads(self.plan(k).read_text(encoding="utf-8")) if self.plan(k).is_file() else None
        return len(read_history(path)) >= int(plan["epochs"] if plan else self.fold_setup(k)["epochs"])

    def trained(self) -> list[int | str]:
        """Folds holding a model (best.pt or last.pt), finished or not; the full model (FULL) last."""
        full = [FULL] if any((self.fold_dir(FULL) / f).is_file() for f in ("best.pt", "last.pt")) else []
        return sorted(set(self.folds("best.pt")) | set(self.folds("last.pt"))) + full

    def fold_dirs(self) -> list[int | str]:
        if not self.path.is_dir():
            return []
        numbered = sorted(int(m.group(1)) for d in self.path.iterdir() if (m := _FOLD_DIR.match(d.name)))
        return numbered + ([FULL] if self.fold_dir(FULL).is_dir() else [])

    def check_setup(self, cfg: Config, task: Task, others: list[int]) -> list[str]:
        """A run dir holds the fold models of one setup, so their CV and ensemble mean something. `others`: the
        folds this command does not train that bind it (trained, or being trained by another process). Returns
        the differences between `cfg` and their setups; raises where they predict other outputs."""
        if not others:
            return []                              # nothing trained here (or a run that crashed at once)
        if (self.classes_file.is_file() or self.task_file.is_file()) and not self.task().same_outputs(task):
            raise KitError(f"{self.path} holds models for other classes or another task ({self.classes_file}); train "
                           f"into a new --run-dir")
        new = cfg.to_dict()
        return list(dict.fromkeys(c for k in others for c in setup_changes(self.fold_setup(k), new)))

    def check_split(self, ids: list[str], labels: list[str], fold_of_row, others: list[int],
                    fix: str = "Folds of two splits form no valid CV or ensemble: train into a new --run-dir") -> None:
        """The folds `others` were trained on the same split: each one's validation images (its oof.csv) are the
        ones the folds file now assigns to it, with the same labels. Refuses a run dir that would mix two splits."""
        for k in others:
            if k == FULL or not self.oof(k).is_file():
                continue
            oof = read_oof([self.oof(k)])
            now = {ids[r]: labels[r] for r in range(len(ids)) if fold_of_row[r] == k}
            then = dict(zip(oof.ids, oof.labels))
            if then != now:
                differ = next(i for i in sorted(set(then) | set(now)) if then.get(i) != now.get(i))
                raise KitError(f"{self.path} holds fold {k} trained on another split of the data than the folds file "
                               f"gives now (image {differ!r}: {then.get(differ, 'not in that fold')!r} then, "
                               f"{now.get(differ, 'not in that fold')!r} now; train.csv or the folds file changed). "
                               f"{fix}")

    def save_setup(self, cfg: Config, task: Task) -> None:
        from kit.core.atomic import write_text
        self.path.mkdir(parents=True, exist_ok=True)
        config_mod.save_config(cfg, self.config_file)
        write_text(self.classes_file, json.dumps(task.names) + "\n")
        write_text(self.task_file, json.dumps(task.to_dict()) + "\n")


def expand(paths) -> list[RunDir]:
    """Run dirs from --run-dir values: a folder of seed runs (RUN_DIR/seed<k>/, from train.py --seeds) stands for
    each of them."""
    runs = []
    for path in map(Path, paths):
        seeds = sorted((d for d in path.glob("seed*") if (d / "config.yaml").is_file() and d.name[4:].isdigit()),
                       key=lambda d: int(d.name[4:])) if not (path / "config.yaml").is_file() else []
        runs += [RunDir(d) for d in seeds] or [RunDir(path)]
    return runs


def blend_dir(runs: list[RunDir]) -> Path:
    """Where a blend's graph and report go by default: beside the first run, named after the runs."""
    return runs[0].path.parent / ("blend_" + "+".join(r.path.name for r in runs))
