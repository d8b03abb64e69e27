"""Train fold models: `python train.py --fold 0` (the digits demo) or `--data-dir DIR --fold all`.

Settings: every flag below the first group is a field of kit/settings/config.py (same name, with dashes); a
--config YAML file sets the same names, and flags win.
"""
import argparse

from kit.core.entry import Parser, main_guard, nonempty
from kit.settings.cli import add_config_flags, config_overrides


def parse_args(argv=None):
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=nonempty, help="YAML file of settings (see configs/)")
    p.add_argument("--fold", default="0", help="fold number, or 'all' (default 0)")
    p.add_argument("--resume", action="store_true", help="continue each fold from its last.pt")
    p.add_argument("--force-resume", action="store_true", help="resume or train even where settings changed")
    p.add_argument("--seeds", type=nonempty, help="comma-separated seeds: train the same setup once per seed on the same "
                                                  "folds file, into RUN_DIR/seed<k>/ (infer.py --run-dir RUN_DIR blends "
                                                  "them)")
    p.add_argument("--demo", choices=["multiclass", "multilabel", "regression"],
                   help="without --data-dir: which demo competition (digits) to write and train (default multiclass)")
    add_config_flags(p)
    return p.parse_args(argv)


def main():
    args = parse_args()
    from kit.train.run import train
    train(args.config, config_overrides(args), args.fold, args.resume, args.force_resume, args.demo, args.seeds)


if __name__ == "__main__":
    main_guard(main)
