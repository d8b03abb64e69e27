"""Export the fold ensemble to ONNX and predict the test set: `python infer.py` after training.

With --onnx PATH nothing is exported and PyTorch is not imported: only onnxruntime, numpy and Pillow run.
"""
import argparse

from kit.core.entry import Parser, main_guard, nonempty, number
from kit.core.providers import PROVIDER_CHOICES


def parse_args(argv=None):
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=nonempty, help="competition folder (default: the one the run was trained on)")
    p.add_argument("--run-dir", action="append", dest="run_dirs", type=nonempty,
                   help="a trained run (default runs/default); repeat it to blend several runs into one graph")
    p.add_argument("--onnx", type=nonempty, help="predict with this exported file; skips the export (no torch needed)")
    p.add_argument("--onnx-out", help="where to export the ensemble (default: RUN_DIR/ensemble.onnx; when the run "
                                      "dir is read-only, e.g. an uploaded Kaggle dataset, beside --out)")
    p.add_argument("--out", default="submissions/submission.csv")
    p.add_argument("--probs", help="also write per-class probabilities to this CSV")
    p.add_argument("--folds", help="comma-separated folds to ensemble (default: every trained fold)")
    p.add_argument("--provider", default="auto", choices=PROVIDER_CHOICES)
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="--tta: identity + horizontal flip for every run; --no-tta: identity only (default: each "
                        "run keeps the views among flips, transpose and rotations that improve its OOF score)")
    p.add_argument("--blend", default="auto", choices=["auto", "weights", "hill", "rank", "stack"],
                   help="how several runs are combined (kit/evaluate/blend.py); auto: the best honest (nested) CV")
    p.add_argument("--int8", action="store_true", help="also export an int8 graph and predict with it (for CPUs)")
    p.add_argument("--fp16", action="store_true", help="also export an fp16 graph and predict with it (for GPUs; "
                                                       "needs pip install -e '.[fp16]')")
    p.add_argument("--export-only", action="store_true")
    p.add_argument("--re-export", action="store_true", help="export even when the graph is up to date (by default a "
                                                            "graph made from the same checkpoints and settings is "
                                                            "reused)")
    p.add_argument("--batch-size", type=number(1, None, int), default=32)
    return p.parse_args(argv)


def main():
    from kit.export.infer import InferRequest, infer
    args = vars(parse_args())
    infer(InferRequest(**{k: v for k, v in args.items() if v is not None}))


if __name__ == "__main__":
    main_guard(main)
