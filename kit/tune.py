"""`python -m kit.tune`: an Optuna study over train.py's settings (kit/tuning/study.py)."""
import argparse

from kit.core.entry import Parser, add_flags, main_guard, request_of
from kit.settings.cli import add_config_flags, config_overrides
from kit.tuning import study


def main() -> None:
    p = Parser(description=study.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p, study.TuneRequest)
    add_config_flags(p)
    args = p.parse_args()
    r = request_of(study.TuneRequest, args)
    study.tune(r.space, r.trials, r.folds, config_overrides(args), r.study, r.storage, r.pruner)


if __name__ == "__main__":
    main_guard(main)
