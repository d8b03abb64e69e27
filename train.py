"""Train fold models: `python train.py --fold 0` (the digits demo) or `--data-dir DIR --fold all`.

Settings: every flag below the first group is a field of kit/settings/config.py (same name, with dashes); a
--config YAML file sets the same names, and flags win. The first group: kit/settings/cli.py TrainRequest.
"""
import argparse

from kit.core.entry import Parser, add_flags, main_guard, request_of
from kit.settings.cli import TrainRequest, add_config_flags, config_overrides


def parse_args(argv=None):
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p, TrainRequest)
    add_config_flags(p)
    return p.parse_args(argv)


def main():
    args = parse_args()
    from kit.evaluate.report import rebuild_reports
    from kit.train.run import Hooks, train
    reports = Hooks(fold_end=lambda run: rebuild_reports(run, quiet=True), run_end=rebuild_reports)
    train(request_of(TrainRequest, args), config_overrides(args), reports)


if __name__ == "__main__":
    main_guard(main)
