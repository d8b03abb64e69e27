"""Command-line flags generated from Config, so the two cannot drift apart."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional

from kit.core.entry import add_flags, option
from kit.settings.config import FIELDS, Config


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Config field (--img-size for img_size, --ema/--no-ema for booleans: a flag may turn off what the
    YAML file turned on). Every flag defaults to None, meaning "not given", so the YAML file and the built-in defaults
    stay underneath."""
    group = parser.add_argument_group("settings (kit/settings/config.py; a --config YAML file sets the same names)")
    add_flags(group, Config, both_ways=True)


def config_overrides(args: argparse.Namespace) -> dict:
    """The Config fields given on the command line."""
    return {name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None}


@dataclass
class TrainRequest:
    """train.py's own flags (the settings follow them, from Config), as one value (kit.core.entry.add_flags)."""
    config: Optional[str] = option(None, "YAML file of settings (see configs/)")
    fold: str = option("0", "fold number, 'all', or 'full' (one model on every image)")
    resume: bool = option(False, "continue each fold from its last.pt")
    force_resume: bool = option(False, "resume or train even where settings changed")
    seeds: Optional[str] = option(None, "comma-separated seeds: train the same setup once per seed on the same folds "
                                        "file, into RUN_DIR/seed<k>/ (infer.py --run-dir RUN_DIR blends them)")
    demo: Optional[str] = option(None, "without --data-dir: which demo competition (digits) to write and train "
                                       "(default multiclass)", choices=("multiclass", "multilabel", "regression"))
