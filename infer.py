"""Export the fold ensemble to ONNX and predict the test set: `python infer.py` after training.

With --onnx PATH nothing is exported and PyTorch is not imported: only onnxruntime, numpy and Pillow run.
"""
import argparse
import csv
from pathlib import Path

from kit.cli import main_guard


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="competition folder (default: the one the run was trained on)")
    p.add_argument("--run-dir", default="runs/default")
    p.add_argument("--onnx", help="predict with this exported file; skips the export (no torch needed)")
    p.add_argument("--out", default="submissions/submission.csv")
    p.add_argument("--probs", help="also write per-class probabilities to this CSV")
    p.add_argument("--folds", help="comma-separated folds to ensemble (default: every trained fold)")
    p.add_argument("--provider", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="horizontal-flip TTA (default: on when training used horizontal flips)")
    p.add_argument("--int8", action="store_true", help="also export an int8 graph and predict with it")
    p.add_argument("--export-only", action="store_true")
    p.add_argument("--batch-size", type=int, default=32)
    return p.parse_args()


def run_settings(run_dir: Path) -> dict:
    """Data settings of the training run (data dir, file and column names), when the run dir is here."""
    import yaml
    path = run_dir / "config.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def score_demo(data_dir: Path, out: Path) -> None:
    """The demo competition ships its hidden labels (solution.csv): report the submission's test accuracy."""
    solution = data_dir / "solution.csv"
    if not solution.is_file():
        return
    with open(solution) as f, open(out) as g:
        truth = {r["image_id"]: r["label"] for r in csv.DictReader(f)}
        pred = {r["image_id"]: r["label"] for r in csv.DictReader(g)}
    correct = sum(pred.get(i) == v for i, v in truth.items())
    print(f"demo test accuracy (against {solution}): {correct / len(truth):.4f} ({correct}/{len(truth)})")


def main():
    args = parse_args()
    from kit.errors import KitError
    from kit import predict

    run_dir = Path(args.run_dir)
    settings = run_settings(run_dir)
    folds = None
    if args.folds:
        try:
            folds = [int(k) for k in args.folds.split(",")]
        except ValueError:
            raise KitError(f"--folds must be comma-separated fold numbers, got {args.folds!r}") from None
    if args.onnx:
        if args.int8 or args.folds or args.export_only:
            raise KitError("--onnx predicts with an existing file: --int8, --folds and --export-only apply to "
                           "exporting; pass the int8 file itself as --onnx")
        onnx_path = args.onnx
    else:
        from kit.export import export
        summary = export(run_dir, folds=folds, tta=args.tta, int8=args.int8, data_dir=args.data_dir)
        onnx_path = summary["int8"]["path"] if args.int8 else summary["path"]
    if args.export_only:
        return
    data_dir = args.data_dir or settings.get("data_dir")
    if not data_dir:
        raise KitError(f"no competition folder: pass --data-dir (no training config in {run_dir} to take it from)")
    predict.run(onnx_path, data_dir, args.out, args.provider, args.batch_size, args.probs,
                settings.get("sample_submission", "sample_submission.csv"), settings.get("test_images", "test_images"),
                train_csv=settings.get("train_csv", "train.csv"))
    score_demo(Path(data_dir), Path(args.out))


if __name__ == "__main__":
    main_guard(main)
