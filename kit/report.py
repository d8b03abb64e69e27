"""Reports a competitor reads, built from the run dir's files alone (so `python -m kit.report RUN_DIR` can
rebuild them any time):

  curves.png            train/val loss and the metric per epoch, one line per fold
  confusion_matrix.png  OOF confusion matrix, rows normalized per true class
  report.csv            class,precision,recall,f1,support (scikit-learn), plus macro/weighted averages
  cv.md                 per-fold and overall CV score, best epoch, wall time per fold, the resolved config
  worst.png             the most confidently wrong OOF images, true and predicted labels
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.metrics import classification_report, confusion_matrix  # noqa: E402

from .atomic import atomic_path, write_csv, write_text  # noqa: E402
from .data import training_images  # noqa: E402
from .errors import KitError  # noqa: E402
from .images import open_rgb  # noqa: E402
from .oof import Epoch, Oof, read_history, read_oof  # noqa: E402
from .rundir import RunDir  # noqa: E402

WORST_IMAGES = 16
log = logging.getLogger(__name__)


@dataclass
class FoldSummary:
    fold: int
    history: list[Epoch]          # metrics.csv
    oof: Oof                      # oof.csv

    @property
    def best(self) -> Epoch:
        return [e for e in self.history if e.is_best][-1]

    @property
    def seconds(self) -> float:
        return sum(e.seconds for e in self.history)


def load_folds(run: RunDir) -> list[FoldSummary]:
    """Every fold with a history and OOF predictions so far."""
    return [FoldSummary(k, read_history(run.history(k)), read_oof([run.oof(k)]))
            for k in run.folds("metrics.csv") if run.oof(k).is_file()]


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_curves(folds: list[FoldSummary], metric: str, path: Path) -> None:
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    for f, color in zip(folds, plt.cm.tab10.colors * 3):
        epochs = [e.epoch for e in f.history]
        ax_loss.plot(epochs, [e.train_loss for e in f.history], "--", color=color, label=f"fold {f.fold} train")
        ax_loss.plot(epochs, [e.val_loss for e in f.history], "-", color=color, label=f"fold {f.fold} val")
        ax_metric.plot(epochs, [e.score for e in f.history], "-o", ms=3, color=color, label=f"fold {f.fold}")
        ax_metric.plot(f.best.epoch, f.best.score, "*", ms=12, color=color)
    ax_loss.set(title="loss (train dashed, validation solid)", xlabel="epoch", ylabel="loss")
    ax_metric.set(title=f"validation {metric} (star: best epoch)", xlabel="epoch", ylabel=metric)
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    _save(fig, path)
def plot_confusion(y: np.ndarray, pred: np.ndarray, classes: list, path: Path) -> None:
    cm = confusion_matrix(y, pred, labels=np.arange(len(classes)), normalize="true")
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * n + 2), max(4, 0.55 * n + 1.5)))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [str(c) for c in classes], rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center")
    ax.set_yticks(range(n), [str(c) for c in classes])
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j] >= 0.005:
                    ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if cm[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=f"OOF confusion matrix ({len(y)} images, rows sum to 1)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, path)


def plot_worst(oof: Oof, y: np.ndarray, classes: list, image_paths: list, path: Path) -> int:
    probs = oof.outputs
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:WORST_IMAGES]
    cols = 4
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows))
    axes = np.atleast_1d(axes).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, wrong):
        ax.imshow(np.asarray(open_rgb(image_paths[i])), interpolation="nearest")
        ax.set_title(f"{oof.ids[i]}\ntrue {classes[y[i]]} | pred {classes[pred[i]]} ({probs[i, pred[i]]:.2f})",
                     fontsize=7)
    if not len(wrong):
        axes[0].text(0.5, 0.5, "no wrong OOF predictions", ha="center", va="center")
    fig.suptitle("most confidently wrong OOF predictions", fontsize=9)
    _save(fig, path)
    return len(wrong)


def summary_table(folds: list[FoldSummary], metric: str, cv: float) -> str:
    scores = [f.best.score for f in folds]
    lines = [f"| fold | best epoch | {metric} | epochs | wall time |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {f.fold} | {f.best.epoch} | {f.best.score:.4f} | {len(f.history)} | {f.seconds:.0f} s |"
              for f in folds]
    lines.append(f"| **CV** | | **{cv:.4f}** (folds {np.mean(scores):.4f} ± {np.std(scores):.4f}) | | "
                 f"{sum(f.seconds for f in folds):.0f} s |")
    return "\n".join(lines)


def write_reports(run_dir: str | Path | RunDir, quiet: bool = False) -> dict:
    """Rebuild every report of `run_dir` from the folds trained so far. Returns the numbers it wrote."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    cfg, task = run.config(), run.task()
    folds = load_folds(run)
    if not folds:
        raise KitError(f"no finished epochs in {run} yet (no fold<k>/metrics.csv and oof.csv)")
    metric, classes = cfg.metric, task.names
    oof = Oof.concat([f.oof for f in folds])
    y = task.encode(oof.labels)
    cv = task.score(metric, y, oof.outputs)
    pred = oof.outputs.argmax(1)

    plot_curves(folds, metric, run.path / "curves.png")
    plot_confusion(y, pred, classes, run.path / "confusion_matrix.png")
    rep = classification_report(y, pred, labels=np.arange(len(classes)), target_names=classes,
                                output_dict=True, zero_division=0)
    write_csv(run.path / "report.csv", ["class", "precision", "recall", "f1", "support"],
              ([name, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1-score']:.4f}", int(v["support"])]
               for name, v in rep.items() if isinstance(v, dict)))
    n_wrong = plot_worst(oof, y, classes, training_images(cfg, oof.ids), run.path / "worst.png")

    table = summary_table(folds, metric, cv)
    write_text(run.path / "cv.md", f"# CV summary: {run.path.name}\n\n"
               f"Overall OOF {metric}: **{cv:.6f}** over {len(oof)} images from folds "
               f"{[f.fold for f in folds]} (of {cfg.num_folds}).\n\n{table}\n\n"
               f"## Resolved config\n\n```yaml\n{yaml.safe_dump(cfg.to_dict(), sort_keys=False)}```\n")
    if not quiet:
        log.info(f"\n{table}\nreports: {run}/{{curves.png, confusion_matrix.png, report.csv, cv.md, worst.png}}")
    return {"cv": cv, "folds": {f.fold: f.best.score for f in folds}, "oof_images": len(oof), "wrong_shown": n_wrong}


def main() -> None:
    import argparse
    p = argparse.ArgumentParser(description="Rebuild the reports of a run dir from its files.")
    p.add_argument("run_dir", nargs="?", default="runs/default")
    write_reports(p.parse_args().run_dir)


if __name__ == "__main__":
    from .cli import main_guard
    main_guard(main)
