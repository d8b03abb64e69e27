"""Reports a competitor reads, built from the run dir's files alone (so `python -m kit.report RUN_DIR` can
rebuild them any time):

  curves.png            train/val loss and the metric per epoch, one line per fold
  cv.md                 per-fold and overall CV score, best epoch, wall time per fold, the task's metrics, the
                        resolved config
  worst.png             the OOF images the models got most wrong, true and predicted labels
  multiclass:  confusion_matrix.png (rows normalized per true class); report.csv class,precision,recall,f1,support
  multilabel:  roc.png (a ROC curve per tag); report.csv tag,threshold,precision,recall,f1,roc_auc,support
  regression:  scatter.png (predicted vs true, residuals); report.csv metric,value
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
from sklearn.metrics import (classification_report, confusion_matrix, f1_score,  # noqa: E402
                             precision_recall_fscore_support, roc_auc_score, roc_curve)

from .atomic import atomic_path, write_csv, write_text  # noqa: E402
from .config import test_size  # noqa: E402
from .data import training_images  # noqa: E402
from .errors import KitError  # noqa: E402
from .images import open_rgb  # noqa: E402
from .metrics import best_thresholds  # noqa: E402
from .oof import Epoch, Oof, read_history, read_oof  # noqa: E402
from .rundir import RunDir  # noqa: E402
from .task import Multilabel  # noqa: E402

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


def plot_worst(oof: Oof, order: np.ndarray, captions: list[str], image_paths: list, path: Path, title: str) -> int:
    """The OOF images at `order` (worst first), each with its caption."""
    shown = order[:WORST_IMAGES]
    cols = 4
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows))
    axes = np.atleast_1d(axes).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, shown):
        ax.imshow(np.asarray(open_rgb(image_paths[i])), interpolation="nearest")
        ax.set_title(f"{oof.ids[i]}\n{captions[i]}", fontsize=7)
    if not len(shown):
        axes[0].text(0.5, 0.5, "no wrong OOF predictions", ha="center", va="center")
    fig.suptitle(title, fontsize=9)
    _save(fig, path)
    return len(shown)


def multiclass_reports(run: RunDir, task, oof: Oof, y: np.ndarray, paths: list) -> tuple[list[str], str]:
    """confusion_matrix.png, report.csv (per-class precision/recall/F1), worst.png (most confidently wrong)."""
    classes, probs = task.names, oof.outputs
    pred = probs.argmax(1)
    plot_confusion(y, pred, classes, run.path / "confusion_matrix.png")
    rep = classification_report(y, pred, labels=np.arange(len(classes)), target_names=classes, output_dict=True,
                                zero_division=0)
    write_csv(run.path / "report.csv", ["class", "precision", "recall", "f1", "support"],
              ([name, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1-score']:.4f}", int(v["support"])]
               for name, v in rep.items() if isinstance(v, dict)))
    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")]
    captions = [f"true {classes[t]} | pred {classes[p]} ({probs[i, p]:.2f})" for i, (t, p) in enumerate(zip(y, pred))]
    plot_worst(oof, wrong, captions, paths, run.path / "worst.png", "most confidently wrong OOF predictions")
    return ["confusion_matrix.png", "report.csv", "worst.png"], ""


def nested_thresholds(y: np.ndarray, probs: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """0/1 predictions where each fold's rows are cut at thresholds fitted on the other folds' rows only."""
    out = np.zeros_like(y, dtype=bool)
    for k in np.unique(folds):
        held = folds == k
        out[held] = probs[held] >= np.asarray(best_thresholds(y[~held], probs[~held]))
    return out


def multilabel_reports(run: RunDir, task, oof: Oof, y: np.ndarray, paths: list) -> tuple[list[str], str]:
    """report.csv (per tag: OOF-fitted threshold, precision, recall, F1, ROC-AUC, support), roc.png (a ROC curve
    per tag), worst.png (the images with the highest log loss); cv.md gets F1 three ways."""
    probs = oof.outputs
    thresholds = best_thresholds(y, probs)
    pred = probs >= np.asarray(thresholds)
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, zero_division=0)
    rows = []
    for t, name in enumerate(task.names):
        auc = roc_auc_score(y[:, t], probs[:, t]) if 0 < y[:, t].sum() < len(y) else float("nan")
        rows.append([name, f"{thresholds[t]:.4f}", f"{precision[t]:.4f}", f"{recall[t]:.4f}", f"{f1[t]:.4f}",
                     f"{auc:.4f}", int(support[t])])
    write_csv(run.path / "report.csv", ["tag", "threshold", "precision", "recall", "f1", "roc_auc", "support"], rows)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for t, name in enumerate(task.names):
        if 0 < y[:, t].sum() < len(y):
            fpr, tpr, _ = roc_curve(y[:, t], probs[:, t])
            ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y[:, t], probs[:, t]):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"OOF ROC per tag ({len(y)} images)")
    ax.legend(fontsize=7)
    _save(fig, run.path / "roc.png")
    loss = -(y * np.log(np.clip(probs, 1e-7, 1)) + (1 - y) * np.log(np.clip(1 - probs, 1e-7, 1))).sum(1)
    order = np.argsort(-loss, kind="stable")
    order = order[np.any(pred[order] != (y[order] > 0), axis=1)]
    fitted = Multilabel(task.names, thresholds, task.min_labels)
    captions = [f"true [{t}] | pred [{p}]" for t, p in zip(oof.labels, fitted.label_cells(probs))]
    plot_worst(oof, order, captions, paths, run.path / "worst.png", "OOF images with the highest log loss")
    at_half = f1_score(y, probs >= 0.5, average="micro", zero_division=0)
    in_sample = f1_score(y, pred, average="micro", zero_division=0)
    honest = f1_score(y, nested_thresholds(y, probs, oof.folds), average="micro", zero_division=0)
    section = (f"## Multi-label metrics (OOF)\n\n| F1 micro at 0.5 | F1 micro, thresholds fitted on all OOF (in-sample) | "
               f"F1 micro, thresholds fitted without each scored fold (honest) | F1 macro (fitted) | ROC-AUC | mAP |\n"
               f"|---:|---:|---:|---:|---:|---:|\n| {at_half:.4f} | {in_sample:.4f} | {honest:.4f} | "
               f"{f1_score(y, pred, average='macro', zero_division=0):.4f} | {task.score('roc_auc', y, probs):.4f} | "
               f"{task.score('map', y, probs):.4f} |\n\nPer tag: report.csv (thresholds, precision, recall), roc.png.\n\n")
    return ["report.csv", "roc.png", "worst.png"], section


def regression_reports(run: RunDir, task, oof: Oof, y: np.ndarray, paths: list) -> tuple[list[str], str]:
    """scatter.png (predicted vs true, residuals vs predicted), report.csv (RMSE, MAE, R², and the RMSE of
    predicting the mean), worst.png (largest errors)."""
    true, pred = y[:, 0], oof.outputs[:, 0]
    fig, (ax, ax_res) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax.scatter(true, pred, s=6, alpha=0.5)
    lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], ":", color="grey")
    ax.set(xlabel=f"true {task.names[0]}", ylabel="OOF prediction", title=f"OOF predicted vs true ({len(true)} images)")
    ax_res.scatter(pred, pred - true, s=6, alpha=0.5)
    ax_res.axhline(0, color="grey", ls=":")
    ax_res.set(xlabel="OOF prediction", ylabel="residual (prediction - true)", title="residuals")
    _save(fig, run.path / "scatter.png")
    values = {m: task.score(m, y, oof.outputs) for m in task.metrics()}
    baseline = float(np.sqrt(np.mean((true - true.mean()) ** 2)))
    write_csv(run.path / "report.csv", ["metric", "value"],
              [[m, f"{v:.6g}"] for m, v in values.items()] + [["rmse_of_predicting_the_mean", f"{baseline:.6g}"]])
    order = np.argsort(-np.abs(pred - true), kind="stable")
    captions = [f"true {t:.4g} | pred {p:.4g}" for t, p in zip(true, pred)]
    plot_worst(oof, order, captions, paths, run.path / "worst.png", "OOF images with the largest errors")
    section = (f"## Regression metrics (OOF)\n\n| " + " | ".join(values) + " | RMSE of predicting the mean |\n|" +
               "---:|" * (len(values) + 1) + "\n| " + " | ".join(f"{v:.4f}" for v in values.values()) +
               f" | {baseline:.4f} |\n\n")
    return ["report.csv", "scatter.png", "worst.png"], section


TASK_REPORTS = {"multiclass": multiclass_reports, "multilabel": multilabel_reports, "regression": regression_reports}


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
    metric = cfg.metric
    oof = Oof.concat([f.oof for f in folds])
    y = task.encode(oof.labels)
    cv = task.score(metric, y, oof.outputs)
    plot_curves(folds, metric, run.path / "curves.png")
    files, section = TASK_REPORTS[task.kind](run, task, oof, y, training_images(cfg, oof.ids))

    table = summary_table(folds, metric, cv)
    write_text(run.path / "cv.md", f"# CV summary: {run.path.name}\n\n"
               f"Overall OOF {metric}: **{cv:.6f}** over {len(oof)} images from folds "
               f"{[f.fold for f in folds]} (of {cfg.num_folds}).\n\n"
               f"Recipe {cfg.recipe}; trained at {cfg.img_size}px, validated (OOF) and exported at "
               f"{test_size(cfg)}px.\n\n{table}\n\n{section}"
               f"## Resolved config\n\n```yaml\n{yaml.safe_dump(cfg.to_dict(), sort_keys=False)}```\n")
    if not quiet:
        log.info(f"\n{table}\nreports: {run}/{{{', '.join(['curves.png', *files, 'cv.md'])}}}")
    return {"cv": cv, "folds": {f.fold: f.best.score for f in folds}, "oof_images": len(oof), "files": files}


def main() -> None:
    import argparse
    p = argparse.ArgumentParser(description="Rebuild the reports of a run dir from its files.")
    p.add_argument("run_dir", nargs="?", default="runs/default")
    write_reports(p.parse_args().run_dir)


if __name__ == "__main__":
    from .entry import main_guard
    main_guard(main)
