"""Export the fold ensemble to ONNX and predict the test set: `python infer.py` after training.

With --onnx PATH nothing is exported and PyTorch is not imported: only onnxruntime, numpy and Pillow run.
"""
import argparse
from pathlib import Path

from kit.entry import main_guard


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="competition folder (default: the one the run was trained on)")
    p.add_argument("--run-dir", action="append", help="a trained run (default runs/default); repeat it to blend "
                                                      "several runs into one graph")
    p.add_argument("--onnx", help="predict with this exported file; skips the export (no torch needed)")
    p.add_argument("--onnx-out", help="where to export the ensemble (default: RUN_DIR/ensemble.onnx; when the run "
                                      "dir is read-only, e.g. an uploaded Kaggle dataset, beside --out)")
    p.add_argument("--out", default="submissions/submission.csv")
    p.add_argument("--probs", help="also write per-class probabilities to this CSV")
    p.add_argument("--folds", help="comma-separated folds to ensemble (default: every trained fold)")
    p.add_argument("--provider", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="--tta: identity + horizontal flip for every run; --no-tta: identity only (default: each "
                        "run keeps the views among flips, transpose and rotations that improve its OOF score)")
    p.add_argument("--int8", action="store_true", help="also export an int8 graph and predict with it")
    p.add_argument("--export-only", action="store_true")
    p.add_argument("--batch-size", type=int, default=32)
    return p.parse_args(argv)


def run_settings(run_dir: Path) -> dict:
    """Data settings of the training run (data dir, file and column names), when the run dir is here."""
    from kit.rundir import RunDir
    run = RunDir(run_dir)
    return run.config().to_dict() if run.config_file.is_file() else {}


def export_path(run_dirs: list[Path], args) -> Path:
    """--onnx-out, else the run dir's ensemble.onnx (a blend's: blend_A+B/ beside the first run), else (a
    read-only place, e.g. an uploaded Kaggle dataset) beside the submission."""
    import logging
    from kit.atomic import writable
    from kit.export import blend_dir
    from kit.rundir import RunDir
    if args.onnx_out:
        return Path(args.onnx_out)
    runs = [RunDir(r) for r in run_dirs]
    default = runs[0].ensemble_file() if len(runs) == 1 else blend_dir(runs) / "ensemble.onnx"
    if writable(default.parent):
        return default
    fallback = Path(args.out).parent / f"{default.parent.name}.ensemble.onnx"
    logging.getLogger("kit.infer").info(f"export: {default.parent} is read-only; exporting to {fallback} instead "
                                        f"(choose the place with --onnx-out)")
    return fallback


def score_demo(data_dir: Path, out: Path) -> None:
    """The demo competitions ship their hidden labels: report the submission's test score."""
    from kit import demo
    score = demo.test_score(data_dir, out)
    if score is not None:
        print(score)


def main():
    args = parse_args()
    from kit.errors import KitError
    from kit.submission import make_submission

    run_dirs = [Path(r) for r in (args.run_dir or ["runs/default"])]
    run_dir = run_dirs[0]
    settings = run_settings(run_dir)
    folds = None
    if args.folds:
        try:
            folds = [int(k) for k in args.folds.split(",")]
        except ValueError:
            raise KitError(f"--folds must be comma-separated fold numbers, got {args.folds!r}") from None
    if args.batch_size < 1:
        raise KitError(f"--batch-size must be at least 1, got {args.batch_size}")
    graph = None
    if args.onnx:
        if args.int8 or args.folds or args.export_only or len(run_dirs) > 1:
            raise KitError("--onnx predicts with an existing file: --int8, --folds, --export-only and several "
                           "--run-dir apply to exporting; pass the int8 file itself as --onnx")
        onnx_path = args.onnx
    else:
        from kit.export import export
        summary = export(run_dirs, out=export_path(run_dirs, args), folds=folds, tta=args.tta, int8=args.int8,
                         data_dir=args.data_dir)
        exported = summary["int8"] if args.int8 else summary
        onnx_path, graph = exported["path"], exported["graph"]
    if args.export_only:
        return
    data_dir = args.data_dir or settings.get("data_dir")
    if not data_dir:
        raise KitError(f"no competition folder: pass --data-dir (no training config in {run_dir} to take it from)")
    make_submission(onnx_path, data_dir, args.out, args.provider, args.batch_size, args.probs,
                    settings.get("sample_submission", "sample_submission.csv"),
                    settings.get("test_images", "test_images"), settings.get("train_csv", "train.csv"), graph=graph)
    score_demo(Path(data_dir), Path(args.out))


if __name__ == "__main__":
    main_guard(main)
