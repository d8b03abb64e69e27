"""Train fold models: `python train.py --fold 0` (the digits demo) or `--data-dir DIR --fold all`.

Settings: every flag below the first group is a field of kit/config.py (same name, with dashes); a --config
YAML file sets the same names, and flags win.
"""
import argparse

from kit.cli import add_config_flags, config_overrides
from kit.entry import main_guard


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file of settings (see configs/)")
    p.add_argument("--fold", default="0", help="fold number, or 'all' (default 0)")
    p.add_argument("--resume", action="store_true", help="continue each fold from its last.pt")
    p.add_argument("--force-resume", action="store_true", help="resume or train even where settings changed")
    p.add_argument("--demo", choices=["multiclass", "multilabel", "regression"],
                   help="without --data-dir: which demo competition (digits) to write and train (default multiclass)")
    add_config_flags(p)
    return p.parse_args(argv)


def main():
    args = parse_args()
    from kit import demo, training
    from kit.config import load_config

    overrides = config_overrides(args)
    cfg = load_config(args.config, overrides)
    if cfg.data_dir is None:
        variant = args.demo or "multiclass"
        root = demo.materialize(variant=variant)
        cfg = load_config(args.config, {**overrides, "data_dir": str(root)}, base=demo.settings(variant))
    elif args.demo:
        from kit.errors import KitError
        raise KitError("--demo trains an embedded demo competition; drop --data-dir (or --demo)")
    training.run(cfg, args.fold, args.resume, args.force_resume)


if __name__ == "__main__":
    main_guard(main)
