"""`python -m kit.tune`: an Optuna study over train.py's settings (kit/tuning/study.py)."""
import argparse
from dataclasses import dataclass
from typing import Optional

from kit.core.entry import Parser, add_flags, main_guard, number, option, request_of
from kit.settings.cli import add_config_flags, config_overrides
from kit.tuning import study


@dataclass
class TuneRequest:
    """kit.tune's own flags, as one value (kit.core.entry.add_flags); train.py's flags follow them."""
    space: str = option(None, "YAML file: settings to search (kit/tuning/space.py)", required=True)
    trials: int = option(None, "trials in the study, all workers together (a re-run continues up to this count)",
                         parse=number(1, 100_000, int), required=True)
    folds: str = option("0", "which folds a trial trains", choices=("0", "all"))
    study: str = option("study", "the study's name")
    storage: Optional[str] = option(None, "an Optuna storage URL shared by several workers (default: sqlite in the "
                                          "study's folder)")
    pruner: str = option("median", "stop unpromising trials on their per-epoch validation score",
                         choices=("median", "halving", "none"))


def main() -> None:
    p = Parser(description=study.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p, TuneRequest)
    add_config_flags(p)
    args = p.parse_args()
    r = request_of(TuneRequest, args)
    study.tune(r.space, r.trials, r.folds, config_overrides(args), r.study, r.storage, r.pruner)


if __name__ == "__main__":
    main_guard(main)
