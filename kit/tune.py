"""`python -m kit.tune`: an Optuna study over train.py's settings (kit/tuning/study.py)."""
import argparse

from kit.core.entry import Parser, main_guard, nonempty, number
from kit.settings.cli import add_config_flags, config_overrides
from kit.tuning import study


def main() -> None:
    p = Parser(description=study.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", type=nonempty, required=True, help="YAML file: settings to search (kit/tuning/space.py)")
    p.add_argument("--trials", type=number(1, 100_000, int), required=True,
                   help="trials in the study, all workers together (a re-run continues up to this count)")
    p.add_argument("--folds", default="0", choices=["0", "all"], help="which folds a trial trains (default 0)")
    p.add_argument("--study", type=nonempty, default="study", help="the study's name (default: study)")
    p.add_argument("--storage", type=nonempty, help="an Optuna storage URL shared by several workers (default: "
                                                    "sqlite in the study's folder)")
    p.add_argument("--pruner", default="median", choices=["median", "halving", "none"],
                   help="stop unpromising trials on their per-epoch validation score (default median)")
    add_config_flags(p)
    args = p.parse_args()
    study.tune(args.space, args.trials, args.folds, config_overrides(args), args.study, args.storage, args.pruner)


if __name__ == "__main__":
    main_guard(main)
