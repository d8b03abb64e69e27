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

Each backend is an optional extra; one that is not installed is one error line naming it, before anything is
written. Only rank 0 logs.
"""
from __future__ import annotations

import importlib.util
import math
import os
import time
from pathlib import Path

from kit.core.errors import KitError
from kit.evaluate.oof import Epoch
from kit.evaluate.rundir import RunDir

TRACKERS = {"tensorboard": ("tensorboard", "pip install tensorboard"),       # name -> (package, how to install it)
            "mlflow": ("mlflow", "pip install -e '.[track]' (mlflow-skinny)")}
RUN_TAG = "kit.run_dir"


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
        package, install = TRACKERS[name]
        if importlib.util.find_spec(package) is None:
            raise KitError(f"--tracker {name} needs the {package} package: {install}")


class Tracking:
    """The run's trackers: opened once per run (kit.train.run), told every epoch of every fold (kit.train.fold) and
    the run's end."""

    def __init__(self, cfg, run: RunDir):
        self.cfg, self.run, self.writers, self.mlflow_run = cfg, run, {}, None
        wanted = names(cfg)
        self.tensorboard = "tensorboard" in wanted
        if "mlflow" in wanted:
            self.mlflow_run = _mlflow_run(cfg, run)

    def epoch(self, fold, e: Epoch) -> None:
        values = {"loss/train": e.train_loss, "loss/val": e.val_loss, f"val/{e.metric}": e.score, "lr": e.lr,
                  "train_images_per_s": e.train_images_per_s}
        if self.tensorboard:
            if fold not in self.writers:
                from torch.utils.tensorboard import SummaryWriter
                self.writers[fold] = SummaryWriter(str(self.run.fold_dir(fold) / "tb"))
            for name, value in values.items():
                self.writers[fold].add_scalar(name, value, e.epoch)
            self.writers[fold].flush()
        if self.mlflow_run is not None:
            client, run_id = self.mlflow_run
            client.log_batch(run_id, metrics=[_metric(f"fold{fold}.{name.replace('/', '_')}", value, e.epoch)
                                              for name, value in values.items() if not math.isnan(value)])

    def finish(self, cv: float | None) -> None:
        """The run's end: the CV (when --fold all computed one) and the reports as artifacts."""
        for writer in self.writers.values():
            writer.close()
        self.writers = {}
        if self.mlflow_run is None:
            return
        client, run_id = self.mlflow_run
        if cv is not None and not math.isnan(cv):
            client.log_batch(run_id, metrics=[_metric(f"cv.{self.cfg.metric}", cv, 0)])
        for path in sorted(self.run.path.glob("*")):
            if path.is_file() and path.suffix in (".md", ".csv", ".png", ".json", ".yaml"):
                client.log_artifact(run_id, str(path))
        for fold_dir in sorted(self.run.path.glob("fold*")) + sorted(self.run.path.glob("full")):
            for name in ("plan.json", "metrics.csv", "config.yaml"):
                if (fold_dir / name).is_file():
                    client.log_artifact(run_id, str(fold_dir / name), artifact_path=fold_dir.name)


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
    name = Path(cfg.data_dir).resolve().name if cfg.data_dir else "kit"
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
