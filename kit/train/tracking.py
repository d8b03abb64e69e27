"""--tracker: where a run's settings, epochs and reports are logged besides its own files (which stay the record).

  tensorboard  each fold's epoch scalars (loss/train, loss/val, val/<metric>, lr, train_images_per_s) to
               <run dir>/fold<k>/tb/ (torch.utils.tensorboard; `tensorboard --logdir RUN_DIR`). `--tensorboard` is
               the same as naming it here.
  mlflow       one MLflow run per run dir, found again by its tag `kit.run_dir`, so folds trained by separate
               commands (or resumed) land in the same MLflow run: the resolved settings as params, each epoch as
               metrics `fold<k>.<name>` stepped by epoch, the CV as `cv.<metric>`, and the run's reports (cv.md,
               report.csv, oof.csv, the figures, every fold's plan.json, metrics.csv and config.yaml) as artifacts.
               The store is $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory; a SQLite
               store's artifacts go to mlartifacts/ beside it (MLflow 3 keeps its file store in maintenance mode;
               `mlflow ui --backend-store-uri sqlite:///mlflow.db` opens it). The experiment is the competition
               folder's name. kit.tune passes --tracker to every trial, so each trial is an MLflow run of the
               study's experiment.
  wandb        one W&B run per run dir: its id is derived from the run dir's path, so later commands on the same run
               dir (another fold, --resume) resume it. The settings as its config, each epoch as `fold<k>/<name>`
               against its own x-axis `fold<k>/epoch` (wandb's define_metric), the CV in the summary as
               `cv/<metric>`, the reports as one artifact `reports-<id>` of type `run-reports`. Offline (files under
               <run dir>/wandb/, `wandb sync` uploads them later) unless the user has logged in (WANDB_API_KEY or
               `wandb login`) or set WANDB_MODE; WANDB_PROJECT (default: the competition folder's name) and WANDB_DIR
               are read as wandb documents them.

Each backend is an optional extra; one that is not installed is one error line naming it, before anything is
written. Only rank 0 logs.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import netrc
import os
import time
from pathlib import Path

from kit.core.errors import KitError
from kit.store.oof import Epoch
from kit.store.rundir import RunDir

RUN_TAG = "kit.run_dir"
REPORT_SUFFIXES = (".md", ".csv", ".png", ".json", ".yaml")
FOLD_FILES = ("plan.json", "metrics.csv", "config.yaml")


def names(cfg) -> list[str]:
    """The trackers a config asks for: --tracker's comma-separated names, and tensorboard for --tensorboard."""
    wanted = [n.strip() for n in (cfg.tracker or "none").split(",") if n.strip() and n.strip() != "none"]
    if cfg.tensorboard and "tensorboard" not in wanted:
        wanted.append("tensorboard")
    return wanted


def check(cfg) -> None:
    """One error line for an unknown tracker or one whose package is not installed."""
    for name in names(cfg):
        if name not in TRACKERS:
            raise KitError(f"--tracker {name!r}: unknown tracker; trackers: none, {', '.join(TRACKERS)} (several joined "
                           f"by commas)")
        backend = TRACKERS[name]
        if importlib.util.find_spec(backend.package) is None:
            raise KitError(f"--tracker {name} needs the {backend.package} package: {backend.install}")


def reports(run: RunDir) -> list[tuple[Path, str]]:
    """(file, folder inside the logged artifact) for every report a tracker uploads at the run's end."""
    out = [(path, "") for path in sorted(run.path.glob("*")) if path.is_file() and path.suffix in REPORT_SUFFIXES]
    for fold_dir in sorted(run.path.glob("fold*")) + sorted(run.path.glob("full")):
        out += [(fold_dir / name, fold_dir.name) for name in FOLD_FILES if (fold_dir / name).is_file()]
    return out


class Tracking:
    """The run's trackers: opened once per run (kit.train.run), told every epoch of every fold (kit.train.fold) and
    the run's end."""

    def __init__(self, cfg, run: RunDir):
        self.backends = [TRACKERS[name](cfg, run) for name in names(cfg)]

    def epoch(self, fold, e: Epoch) -> None:
        values = {"loss/train": e.train_loss, "loss/val": e.val_loss, f"val/{e.metric}": e.score, "lr": e.lr,
                  "train_images_per_s": e.train_images_per_s}
        for backend in self.backends:
            backend.epoch(fold, e.epoch, values)

    def finish(self, cv: float | None) -> None:
        """The run's end: the CV (when --fold all computed one) and the reports as artifacts."""
        cv = None if cv is None or math.isnan(cv) else float(cv)
        for backend in self.backends:
            backend.finish(cv)


class TensorBoard:
    package, install = "tensorboard", "pip install tensorboard"

    def __init__(self, cfg, run: RunDir):
        self.run, self.writers = run, {}

    def epoch(self, fold, epoch: int, values: dict) -> None:
        if fold not in self.writers:
            from torch.utils.tensorboard import SummaryWriter
            self.writers[fold] = SummaryWriter(str(self.run.fold_dir(fold) / "tb"))
        for name, value in values.items():
            self.writers[fold].add_scalar(name, value, epoch)
        self.writers[fold].flush()

    def finish(self, cv: float | None) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers = {}


class MLflow:
    package, install = "mlflow", "pip install -e '.[track]' (mlflow-skinny)"

    def __init__(self, cfg, run: RunDir):
        self.cfg, self.run = cfg, run
        self.client, self.run_id = _mlflow_run(cfg, run)

    def epoch(self, fold, epoch: int, values: dict) -> None:
        self.client.log_batch(self.run_id, metrics=[_metric(f"fold{fold}.{name.replace('/', '_')}", value, epoch)
                                                    for name, value in values.items() if not math.isnan(value)])

    def finish(self, cv: float | None) -> None:
        if cv is not None:
            self.client.log_batch(self.run_id, metrics=[_metric(f"cv.{self.cfg.metric}", cv, 0)])
        for path, folder in reports(self.run):
            self.client.log_artifact(self.run_id, str(path), artifact_path=folder or None)


def _metric(key: str, value: float, step: int):
    from mlflow.entities import Metric
    return Metric(key, float(value), int(time.time() * 1000), step)


def _mlflow_run(cfg, run: RunDir):
    """(MlflowClient, run id) of this run dir's MLflow run: found by its tag, else created with the settings as
    params."""
    from mlflow.tracking import MlflowClient
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    # a SQLite store keeps its artifacts beside it (MLflow's own default is ./mlruns wherever the command runs); a
    # server decides for itself
    artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri() \
        if uri.startswith("sqlite:///") else None
    client = MlflowClient(uri)
    name = experiment_name(cfg)
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name, artifacts)
    key = str(run.path.resolve())
    found = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{key}'", max_results=1)
    if found:
        return client, found[0].info.run_id
    created = client.create_run(experiment_id, run_name=run.path.name, tags={RUN_TAG: key})
    from mlflow.entities import Param
    params = [Param(k, str(v)[:6000]) for k, v in sorted(cfg.to_dict().items())]
    for i in range(0, len(params), 100):                   # MLflow takes at most 100 params a batch
        client.log_batch(created.info.run_id, params=params[i:i + 100])
    return client, created.info.run_id


def experiment_name(cfg) -> str:
    """The competition folder's name: an MLflow experiment, a W&B project."""
    return Path(cfg.data_dir).resolve().name if cfg.data_dir else "kit"


class WandB:
    package, install = "wandb", "pip install -e '.[wandb]'"

    def __init__(self, cfg, run: RunDir):
        import wandb
        self.cfg, self.run, self.folds = cfg, run, set()
        self.id = wandb_id(run)
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
        self.wb = wandb.init(project=os.environ.get("WANDB_PROJECT") or experiment_name(cfg), id=self.id,
                             name=run.path.name, resume="allow", mode=mode,
                             dir=os.environ.get("WANDB_DIR") or str(run.path),
                             settings=wandb.Settings(console="off", silent=True, x_disable_stats=True))
        self.wb.config.update(cfg.to_dict(), allow_val_change=True)

    def epoch(self, fold, epoch: int, values: dict) -> None:
        prefix = f"fold{fold}"
        if fold not in self.folds:           # each fold's curves against its own epochs
            self.wb.define_metric(f"{prefix}/epoch")
            self.wb.define_metric(f"{prefix}/*", step_metric=f"{prefix}/epoch")
            self.folds.add(fold)
        self.wb.log({f"{prefix}/epoch": epoch, **{f"{prefix}/{name.replace('/', '_')}": value
                                                  for name, value in values.items() if not math.isnan(value)}})

    def finish(self, cv: float | None) -> None:
        import wandb
        if cv is not None:
            self.wb.summary[f"cv/{self.cfg.metric}"] = cv
        found = reports(self.run)
        if found:
            artifact = wandb.Artifact(f"reports-{self.id}", type="run-reports")
            for path, folder in found:
                artifact.add_file(str(path), name=f"{folder}/{path.name}" if folder else path.name)
            self.wb.log_artifact(artifact)
        self.wb.finish()


def wandb_id(run: RunDir) -> str:
    """The W&B run id of a run dir: the same folder, the same W&B run, whichever command trains it."""
    return hashlib.sha1(str(run.path.resolve()).encode()).hexdigest()[:16]


def wandb_logged_in() -> bool:
    """An API key in the environment, or `wandb login`'s entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


TRACKERS = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}      # --tracker name -> its backend
