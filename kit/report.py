"""Reports a competitor reads, built from the run dir's files alone (so `python -m kit.report RUN_DIR` can
rebuild them any time):

  curves.png            train/val loss and the metric per epoch, one line per fold
  confusion_matrix.png  OOF confusion matrix, rows normalized per true class
  report.csv            class,precision,recall,f1,support (scikit-learn), plus macro/weighted averages
  cv.md                 per-fold and overall CV score, best epoch, wall time per fold, the resolved config
  worst.png             the most confidently wrong OOF images, true and predicted labels
"""
from __future__ import annotations

import csv
import json
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
from .engine import oof_arrays, read_oof_rows  # noqa: E402
from .errors import KitError  # noqa: E402
from .metrics import score  # noqa: E402

WORST_IMAGES = 16


@dataclass
class FoldSummary:
    fold: int
    metrics: list[dict]           # rows of metrics.csv
    oof: list[dict]               # rows of oof.csv

    @property
    def best(self) -> dict:
        return [m for m in self.metrics if m["is_best"] == "1"][-1]

    @property
    def seconds(self) -> float:
        return sum(float(m["seconds"]) for m in self.metrics)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_folds(run_dir: Path) -> list[FoldSummary]:
    folds = []
    for d in sorted(run_dir.glob("fold*"), key=lambda p: p.name):
        if d.name[4:].isdigit() and (d / "metrics.csv").is_file() and (d / "oof.csv").is_file():
            folds.append(FoldSummary(int(d.name[4:]), _rows(d / "metrics.csv"), read_oof_rows([d / "oof.csv"])))
    return sorted(folds, key=lambda f: f.fold)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_curves(folds: list[FoldSummary], metric: str, path: Path) -> None:
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    for f, color in zip(folds, plt.cm.tab10.colors * 3):
        epochs = [int(m["epoch"]) for m in f.metrics]
        ax_loss.plot(epochs, [float(m["train_loss"]) for m in f.metrics], "--", color=color, label=f"fold {f.fold} train")
        ax_loss.plot(epochs, [float(m["val_loss"]) for m in f.metrics], "-", color=color, label=f"fold {f.fold} val")
        ax_metric.plot(epochs, [float(m["score"]) for m in f.metrics], "-o", ms=3, color=color, label=f"fold {f.fold}")
        ax_metric.plot(int(f.best["epoch"]), float(f.best["score"]), "*", ms=12, color=color)
    ax_loss.set(title="loss (train dashed, validation solid)", xlabel="epoch", ylabel="cross-entropy")
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


def plot_worst(rows: list[dict], y: np.ndarray, probs: np.ndarray, classes: list, image_paths: dict, path: Path) -> int:
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]])][:WORST_IMAGES]
    cols = 4
    fig, axes = plt.subplots(max(1, -(-len(wrong) // cols)), cols, figsize=(2.6 * cols, 2.9 * max(1, -(-len(wrong) // cols))))
    axes = np.atleast_1d(axes).ravel()
    for ax in axes:
        ax.axis("off")
    from PIL import Image
    for ax, i in zip(axes, wrong):
        with Image.open(image_paths[rows[i]["image_id"]]) as im:
            ax.imshow(np.asarray(im.convert("RGB")), interpolation="nearest")
        ax.set_title(f"{rows[i]['image_id']}\ntrue {classes[y[i]]} | pred {classes[pred[i]]} ({probs[i, pred[i]]:.2f})",
                     fontsize=7)
    if not len(wrong):
        axes[0].text(0.5, 0.5, "no wrong OOF predictions", ha="center", va="center")
    fig.suptitle("most confidently wrong OOF predictions", fontsize=9)
    _save(fig, path)
    return len(wrong)


def summary_table(folds: list[FoldSummary], metric: str, cv: float) -> str:
    scores = [float(f.best["score"]) for f in folds]
    lines = [f"| fold | best epoch | {metric} | epochs | wall time |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {f.fold} | {f.best['epoch']} | {float(f.best['score']):.4f} | {len(f.metrics)} | {f.seconds:.0f} s |"
              for f in folds]
    lines.append(f"| **CV** | | **{cv:.4f}** (folds {np.mean(scores):.4f} ± {np.std(scores):.4f}) | | "
                 f"{sum(f.seconds for f in folds):.0f} s |")
    return "\n".join(lines)


def write_reports(run_dir: str | Path, quiet: bool = False) -> dict:
    """Rebuild every report of `run_dir` from the folds trained so far. Returns the numbers it wrote."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise KitError(f"{run_dir} is not a run dir (no config.yaml); train first")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    classes = json.loads((run_dir / "classes.json").read_text())
    folds = load_folds(run_dir)
    if not folds:
        raise KitError(f"no finished epochs in {run_dir} yet (no fold<k>/metrics.csv and oof.csv)")
    metric = cfg["metric"]
    rows = [r for f in folds for r in f.oof]
    y, probs = oof_arrays(rows, classes)
    cv = score(metric, y, probs)
    pred = probs.argmax(1)

    plot_curves(folds, metric, run_dir / "curves.png")
    plot_confusion(y, pred, classes, run_dir / "confusion_matrix.png")
    rep = classification_report(y, pred, labels=np.arange(len(classes)), target_names=[str(c) for c in classes],
                                output_dict=True, zero_division=0)
    write_csv(run_dir / "report.csv", ["class", "precision", "recall", "f1", "support"],
              ([name, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1-score']:.4f}", int(v["support"])]
               for name, v in rep.items() if isinstance(v, dict)))
    from .data import resolve_images
    root = Path(cfg["data_dir"])
    ids = [r["image_id"] for r in rows]
    paths = dict(zip(ids, resolve_images(root / cfg["train_images"], ids, root / cfg["train_csv"])))
    n_wrong = plot_worst(rows, y, probs, classes, paths, run_dir / "worst.png")

    table = summary_table(folds, metric, cv)
    write_text(run_dir / "cv.md", f"# CV summary: {run_dir.name}\n\n"
               f"Overall OOF {metric}: **{cv:.6f}** over {len(rows)} images from folds "
               f"{[f.fold for f in folds]} (of {cfg['num_folds']}).\n\n{table}\n\n"
               f"## Resolved config\n\n```yaml\n{yaml.safe_dump(cfg, sort_keys=False)}```\n")
    if not quiet:
        print(f"\n{table}\nreports: {run_dir}/{{curves.png, confusion_matrix.png, report.csv, cv.md, worst.png}}")
    return {"cv": cv, "folds": {f.fold: float(f.best["score"]) for f in folds}, "oof_images": len(rows),
            "wrong_shown": n_wrong}


if __name__ == "__main__":
    from .cli import main_guard
    main_guard(lambda: write_reports(sys.argv[1] if len(sys.argv) > 1 else "runs/default"))
