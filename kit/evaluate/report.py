"""Reports a competitor reads, built from the run dir's files alone (so `python -m kit.report RUN_DIR` can
rebuild them any time):

  curves.png            train/val loss and the metric per epoch, one line per fold
  cv.md                 per-fold and overall CV score, best epoch, wall time per fold, the task's metrics, the
                        resolved config
  worst.png             the OOF images the models got most wrong, true and predicted labels (the task's order)
  report.csv            the task's table (kit/core/task: report_rows): per class, per tag, or the regression metrics
  the task's figures    confusion_matrix.png (multiclass: rows normalized per true class; the classes with the most
                        confusions when there are many), roc.png (multilabel: a ROC curve per tag, the most frequent
                        tags when there are many), scatter.png (regression: predicted vs true, residuals)

Every figure is bounded in size and memory whatever the number of classes (10,000 included): a report must never
stop training (kit.train.run catches its failure and says so).
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from kit.core.atomic import atomic_path, write_csv, write_text
from kit.core.entry import option, parse_request
from kit.core.errors import KitError
from kit.core.images import open_rgb
from kit.core.table import training_images
from kit.store.oof import Epoch, Oof, read_history, read_kept, read_oof
from kit.store.rundir import FULL, RunDir
from kit.prepare.imbalance import imbalance_advice
from kit.settings.config import test_size
from kit.train.budget import epochs_text, partial_text

WORST_IMAGES = 16
MAX_CLASSES_SHOWN = 30        # a figure with more rows or curves is unreadable and unbounded in memory
log = logging.getLogger(__name__)


@dataclass
class FoldSummary:
    fold: int
    history: list[Epoch]          # metrics.csv
    oof: Oof                      # oof.csv
    kept: dict | None = None      # kept.json (--avg-top-k)

    @property
    def best(self) -> Epoch:
        return [e for e in self.history if e.is_best][-1]

    @property
    def averaged(self) -> bool:
        return bool(self.kept) and len(self.kept["epochs"]) > 1

    @property
    def score(self) -> float:
        """The kept model's validation score: the best epoch's, or the average's when that was kept."""
        return self.kept["average_score"] if self.averaged else self.best.score

    @property
    def seconds(self) -> float:
        return sum(e.seconds for e in self.history)


def pyplot():
    """matplotlib's pyplot on the file-only backend, imported when a figure is drawn: training imports this module,
    and ~0.4 s of import at start-up is time a --time-budget would take from the epochs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def load_folds(run: RunDir) -> list[FoldSummary]:
    """Every fold with a history and OOF predictions so far."""
    return [FoldSummary(k, read_history(run.history(k)), read_oof([run.oof(k)]), read_kept(run.kept(k)))
            for k in run.folds("metrics.csv") if run.oof(k).is_file()]


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)


def plot_curves(folds: list[FoldSummary], metric: str, path: Path) -> None:
    plt = pyplot()
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
def plot_confusion(y: np.ndarray, pred: np.ndarray, classes: list, path: Path) -> str:
    """Rows normalized per true class. Up to MAX_CLASSES_SHOWN classes all of them; beyond, the classes involved
    in the most confusions (counted from the wrong rows only: memory O(images), never classes²)."""
    n = len(classes)
    support = np.bincount(y, minlength=n)
    shown = np.arange(n)
    if n > MAX_CLASSES_SHOWN:
        involved = Counter()
        for t, p in zip(y[y != pred], pred[y != pred]):
            involved[int(t)] += 1
            involved[int(p)] += 1
        top = [c for c, _ in involved.most_common(MAX_CLASSES_SHOWN)]
        shown = np.array(sorted(top or range(MAX_CLASSES_SHOWN)))
    at = np.full(n, -1)
    at[shown] = np.arange(len(shown))
    keep = (at[y] >= 0) & (at[pred] >= 0)
    cm = np.zeros((len(shown), len(shown)))
    np.add.at(cm, (at[y[keep]], at[pred[keep]]), 1.0)
    cm /= np.maximum(support[shown], 1)[:, None]
    k = len(shown)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * k + 2), max(4, 0.55 * k + 1.5)))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    names = [str(classes[c]) for c in shown]
    ax.set_xticks(range(k), names, rotation=45 if k > 6 else 0, ha="right" if k > 6 else "center")
    ax.set_yticks(range(k), names)
    for i in range(k):
        for j in range(k):
            if cm[i, j] >= 0.005:
                ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > 0.5 else "black")
    scope = "" if k == n else f"; the {k} of {n} classes in the most confusions"
    ax.set(xlabel="predicted", ylabel="true", title=f"OOF confusion matrix ({len(y)} images, rows sum to 1{scope})")
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, path)
    return "confusion_matrix.png"


def plot_roc(y: np.ndarray, probs: np.ndarray, names: list, path: Path) -> str:
    """A ROC curve per tag (the MAX_CLASSES_SHOWN most frequent tags when there are more)."""
    from sklearn.metrics import roc_auc_score, roc_curve
    counts = y.sum(0)
    order = np.argsort(-counts, kind="stable")[:MAX_CLASSES_SHOWN]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for t in sorted(order):
        if 0 < counts[t] < len(y):
            fpr, tpr, _ = roc_curve(y[:, t], probs[:, t])
            ax.plot(fpr, tpr, label=f"{names[t]} (AUC {roc_auc_score(y[:, t], probs[:, t]):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    scope = "" if len(order) == len(names) else f"; the {len(order)} most frequent of {len(names)} tags"
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"OOF ROC per tag ({len(y)} images{scope})")
    ax.legend(fontsize=7)
    _save(fig, path)
    return "roc.png"


def plot_scatter(y: np.ndarray, outputs: np.ndarray, names: list, path: Path) -> str:
    """Predicted vs true, and residuals vs predicted."""
    true, pred = y[:, 0], outputs[:, 0]
    plt = pyplot()
    fig, (ax, ax_res) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax.scatter(true, pred, s=6, alpha=0.5)
    lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], ":", color="grey")
    ax.set(xlabel=f"true {names[0]}", ylabel="OOF prediction", title=f"OOF predicted vs true ({len(true)} images)")
    ax_res.scatter(pred, pred - true, s=6, alpha=0.5)
    ax_res.axhline(0, color="grey", ls=":")
    ax_res.set(xlabel="OOF prediction", ylabel="residual (prediction - true)", title="residuals")
    _save(fig, path)
    return "scatter.png"


# the figures a task asks for (Task.plots) -> how they are drawn and the file each writes
PLOTS = {"confusion": lambda y, out, names, run: plot_confusion(y, out.argmax(1), names, run.path / "confusion_matrix.png"),
         "roc": lambda y, out, names, run: plot_roc(y, out, names, run.path / "roc.png"),
         "scatter": lambda y, out, names, run: plot_scatter(y, out, names, run.path / "scatter.png")}


def plot_worst(oof: Oof, order: np.ndarray, captions: list[str], image_paths: list, path: Path, title: str) -> int:
    """The OOF images at `order` (worst first), each with its caption."""
    shown = order[:WORST_IMAGES]
    cols = 4
    rows = max(1, -(-len(shown) // cols))
    plt = pyplot()
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


def task_reports(run: RunDir, task, oof: Oof, y: np.ndarray, paths: list) -> tuple[list[str], str]:
    """The task's figures, report.csv and worst.png; returns (files written, the task's cv.md section)."""
    files = [PLOTS[name](y, oof.outputs, task.names, run) for name in task.plots]
    header, rows = task.report_rows(y, oof.outputs)
    write_csv(run.path / "report.csv", header, rows)
    order, captions, title = task.worst(y, oof.outputs, oof.labels)
    plot_worst(oof, order, captions, paths, run.path / "worst.png", title)
    return files + ["report.csv", "worst.png"], task.report_section(y, oof.outputs, oof.folds)


def summary_table(folds: list[FoldSummary], metric: str, cv: float) -> str:
    """Per fold: the best epoch, the kept model's score, epochs, wall time (and, with --avg-top-k, what was kept)."""
    scores = [f.score for f in folds]
    averaging = any(f.kept for f in folds)
    lines = [f"| fold | best epoch | {metric} | epochs | wall time |" + (" kept weights |" if averaging else ""),
             "|---:|---:|---:|---:|---:|" + ("---|" if averaging else "")]
    for f in folds:
        kept = ""
        if averaging:
            kept = (f" average of epochs {f.kept['epochs']} ({f.kept['average_score']:.4f} vs the best epoch's "
                    f"{f.kept['best_epoch_score']:.4f}) |" if f.averaged else " the best epoch |")
        lines.append(f"| {f.fold} | {f.best.epoch} | {f.score:.4f} | {len(f.history)} | {f.seconds:.0f} s |{kept}")
    lines.append(f"| **CV** | | **{cv:.4f}** (folds {np.mean(scores):.4f} ± {np.std(scores):.4f}) | | "
                 f"{sum(f.seconds for f in folds):.0f} s |" + (" |" if averaging else ""))
    return "\n".join(lines)


# Why the full model trains a fold's epochs (issue 29), said in every full model's cv.md
FULL_EPOCHS_WHY = ("Its epochs are a fold's (`--epochs`, or what `--time-budget` plans): distilled from a 5-fold "
                   "teacher with pseudo-labels, the full model at a fold's epochs scored at or above the teacher's "
                   "5-fold ensemble on held-out images on digits-hard and photo-patches (one seed each), and 1.5x or "
                   "2x a fold's epochs did not do better (bench/RESULTS.md \"The full model's epochs\").")


def full_model_note(run: RunDir, folds: list[FoldSummary], metric: str) -> str:
    """What cv.md says of RUN/full: it has no CV of its own; the folds' CV is its estimate."""
    if not run.history(FULL).is_file():
        return ""
    history = read_history(run.history(FULL))
    estimate = (f"The per-fold models' CV above ({metric}) is its estimate: they trained the same way on 4/5 of the "
                f"images." if folds else "No fold models trained the same way yet: train them (--fold all) for an "
                                             "estimate.")
    pseudo = " and the pseudo-labelled test images" if run.config().pseudo_label else ""
    return (f"## The full model\n\n`full/` trained on every training image{pseudo} for {len(history)} epochs (its "
            f"last epoch's weights are kept; final train loss {history[-1].train_loss:.4f}). It has **no CV of its "
            f"own**: no image was held out from it. {estimate}\n\n{FULL_EPOCHS_WHY}\n\n")


def plan_note(run: RunDir, cfg, folds: list[FoldSummary]) -> str:
    """What each fold trained (model and why, batch, learning rate, arithmetic, epochs) and, under --time-budget,
    how its epochs were planned: each fold's plan.json (kit.train.budget)."""
    names = [f.fold for f in folds] + ([FULL] if run.plan(FULL).is_file() else [])
    plans = {k: json.loads(run.plan(k).read_text(encoding="utf-8")) for k in names if run.plan(k).is_file()}
    if not plans:
        return ""
    rows = [f"| {k} | {p['model']} | {p['model_why']} | {p['batch_size']} | {p['lr']:.4g} | {p.get('agc', '')} | "
            f"{p['precision']} | {p['epochs']}{partial_text(p)}{_budget_cell(p)} |" for k, p in plans.items()]
    text = ("## Plan\n\n| fold | model | why this model | batch | lr | AGC | precision | epochs |\n"
            "|---|---|---|---:|---:|---|---|---|\n" + "\n".join(rows) + "\n\n")
    if cfg.time_budget:
        parts = [f"fold {k}: {epochs_text(p)} ({p['seconds_per_epoch']:.0f} s each, the step from "
                 f"{p.get('pace_from') or 'its probe'})" for k, p in plans.items() if p.get("budget_s")]
        text = f"Time budget {cfg.time_budget} per fold, planned from a timed training step and made again after " \
            f"each fold's first epoch: {'; '.join(parts)}.\n\n" + text
    return text


def _budget_cell(p: dict) -> str:
    if not p.get("budget_s"):
        return ""
    replan = (f", re-planned after the first epoch (the first plan said {p['first_plan_epochs']})"
              if p.get("replanned") is not None and p["first_plan_epochs"] != p["epochs"] else "")
    every = f", validated every {p['val_every']} epochs and after the last" if p.get("val_every", 1) > 1 else ""
    return (f", {p['seconds_per_epoch']:.1f} s each in a {p['budget_s']:.0f} s budget (start-up "
            f"{p['startup_s']:.1f} s){replan}{every}")


def imbalance_note(cfg) -> str:
    """What the run did about class imbalance, when it did anything."""
    parts = [f"sampler {cfg.sampler}" if cfg.sampler != "none" else "",
             "inverse-frequency class weights" if cfg.class_weights == "auto" else "",
             f"focal loss (gamma {cfg.focal_gamma:g})" if cfg.loss == "focal" else ""]
    parts = [p for p in parts if p]
    return f"Class imbalance: {', '.join(parts)}; per-class recall below.\n\n" if parts else ""


def teacher_note(cfg) -> str:
    if not cfg.teacher:
        return ""
    pseudo = (f" Pseudo-labels: the test images the teacher is at least {cfg.pseudo_threshold:g} confident about, "
              f"weight {cfg.pseudo_weight:g}." if cfg.pseudo_label else "")
    return (f"Distilled from {', '.join(cfg.teacher)} (distill_weight {cfg.distill_weight:g}, temperature "
            f"{cfg.distill_temperature:g}); fold k learned from teacher fold k only, so the CV stays out of fold.{pseudo}"
            f"\n\n")


def _advice(task, cfg, folds: list[FoldSummary]) -> str:
    if not folds:
        return ""
    labels = [label for f in folds for label in f.oof.labels]
    advice = imbalance_advice(task, task.encode(labels), cfg)
    return advice + "\n\n" if advice else ""


def write_reports(run_dir: str | Path | RunDir, quiet: bool = False) -> dict:
    """Rebuild every report of `run_dir` from the folds trained so far. Returns the numbers it wrote."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    cfg, task = run.config(), run.task()
    folds = load_folds(run)
    metric = cfg.metric
    full = full_model_note(run, folds, metric)
    if not folds and not full:
        raise KitError(f"no finished epochs in {run} yet (no fold<k>/metrics.csv and oof.csv)")
    header = (f"# CV summary: {run.path.name}\n\nRecipe {cfg.recipe}; trained at {cfg.img_size}px, validated (OOF) "
              f"and exported at {test_size(cfg)}px.\n\n{plan_note(run, cfg, folds)}{imbalance_note(cfg)}"
              f"{_advice(task, cfg, folds)}"
              f"{teacher_note(cfg)}")
    config = f"## Resolved config\n\n```yaml\n{yaml.safe_dump(cfg.to_dict(), sort_keys=False)}```\n"
    if not folds:
        write_text(run.path / "cv.md", header + full + config)
        return {"cv": float("nan"), "folds": {}, "oof_images": 0, "files": []}
    oof = Oof.concat([f.oof for f in folds])
    y = task.encode(oof.labels)
    cv = task.score(metric, y, oof.outputs)
    plot_curves(folds, metric, run.path / "curves.png")
    files, section = task_reports(run, task, oof, y, training_images(cfg, oof.ids))
    table = summary_table(folds, metric, cv)
    write_text(run.path / "cv.md", header + f"Overall OOF {metric}: **{cv:.6f}** over {len(oof)} images from folds "
               f"{[f.fold for f in folds]} (of {cfg.num_folds}).\n\n{table}\n\n{full}{section}{config}")
    if not quiet:
        log.info(f"\n{table}\nreports: {run}/{{{', '.join(['curves.png', *files, 'cv.md'])}}}")
    return {"cv": cv, "folds": {f.fold: f.score for f in folds}, "oof_images": len(oof), "files": files}


@dataclass
class ReportRequest:
    """kit.report's flags, as one value (kit.core.entry.add_flags)."""
    run_dir: str = option("runs/default", "the run dir", positional=True, nargs="?")


def rebuild_reports(run: RunDir, quiet: bool = False) -> None:
    """Rebuild the run's reports while it trains (train.py's hooks); a report that fails is said, never stops
    training."""
    try:
        write_reports(run, quiet=quiet)
    except Exception as e:  # noqa: BLE001 - a figure or table must never cost the folds still to train
        log.warning(f"warning: the reports of {run} could not be rebuilt ({type(e).__name__}: {e}); training goes "
                    f"on. Rebuild them later with python -m kit.report {run}")


def main() -> None:
    run = Path(parse_request(ReportRequest, description="Rebuild the reports of a run dir from its files.").run_dir)
    if run.exists() and not run.is_dir():
        raise KitError(f"{run} is a file; give the run dir (a folder)")
    write_reports(run)

