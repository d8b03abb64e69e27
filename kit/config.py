"""Every training knob as a plain named value. Precedence: defaults < YAML file < command-line flags."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import KitError


@dataclass
class Config:
    # --- competition folder (Kaggle layout; names differ between competitions) ---
    data_dir: Optional[str] = None          # None: the embedded digits demo competition
    train_csv: str = "train.csv"
    train_images: str = "train_images"
    test_images: str = "test_images"
    sample_submission: str = "sample_submission.csv"
    id_col: str = "image_id"
    label_col: str = "label"
    group_col: Optional[str] = None         # set it to keep groups (patients, sessions) inside one fold
    # --- folds ---
    folds_csv: str = "folds/folds.csv"
    num_folds: Optional[int] = None         # None: 5 for a new split, else what folds_csv holds
    seed: int = 42
    # --- outputs ---
    run_dir: str = "runs/default"
    # --- model ---
    model: str = "eca_nfnet_l0"
    pretrained: bool = True                 # timm's pretrained weights (downloaded once, then cached)
    pretrained_file: Optional[str] = None   # local weights instead of a download
    drop_rate: float = 0.2
    drop_path_rate: float = 0.1
    img_size: int = 224
    mean: Optional[list] = None             # None: the model's pretrained-config normalization
    std: Optional[list] = None
    # --- optimization ---
    epochs: int = 10
    batch_size: int = 32
    accum_steps: int = 1                    # optimizer step every N batches; effective batch = N * batch_size
    optimizer: str = "sgd"                  # sgd (Nesterov, as in the NFNet paper) or adamw
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 2e-5
    warmup_epochs: float = 1.0
    min_lr: float = 1e-6
    label_smoothing: float = 0.1
    # AGC clip factor lambda; 0 disables. The paper uses 0.01 at batch 1024-4096 and shows smaller batches
    # tolerate larger lambda; Kaggle batches (16-64) train well at 0.04-0.1, see README "Why these defaults".
    agc_clip: float = 0.05
    agc_eps: float = 1e-3
    ema: bool = True
    ema_decay: float = 0.999                # with warmup: short runs get a shorter EMA horizon automatically
    amp: bool = True                        # CUDA only; gradients are unscaled before AGC
    # --- augmentation (probabilities; 0 turns one off) ---
    aug_hflip: float = 0.5
    aug_vflip: float = 0.0
    aug_shift_scale_rotate: float = 0.5
    aug_brightness_contrast: float = 0.5
    aug_coarse_dropout: float = 0.3
    # --- evaluation ---
    metric: str = "accuracy"                # accuracy, macro_f1, log_loss, roc_auc
    # --- runtime ---
    device: str = "auto"                    # auto, cpu, cuda
    num_workers: int = 2
    # NHWC activations. None: on for CUDA (tensor-core convs under AMP), off on the CPU, where bench/data.py
    # measured NHWC training steps 2-4 % slower at 32-224 px
    channels_last: Optional[bool] = None
    save_every_steps: int = 0               # also save a resumable checkpoint every N optimizer steps
    deterministic: bool = True
    tensorboard: bool = False               # also log epoch scalars to <run dir>/fold<k>/tb (needs tensorboard)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Changing any of these changes what a run produces; a run dir holds models of exactly one such setup.
RESULT_KEYS = ("model", "img_size", "num_folds", "seed", "folds_csv", "mean", "std", "label_col", "id_col",
               "group_col")

FIELD_TYPES = {f.name: f.type for f in fields(Config)}


def _check_type(name: str, value: Any, source: str) -> Any:
    kind = FIELD_TYPES[name]
    if value is None:
        if "Optional" in kind:
            return None
        raise KitError(f"{source}: '{name}' cannot be empty")
    base = kind.replace("Optional[", "").rstrip("]")
    try:
        if base == "bool":
            if not isinstance(value, bool):
                raise TypeError
            return value
        if base == "int":
            if isinstance(value, bool) or float(value) != int(value):
                raise TypeError
            return int(value)
        if base == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if base == "list":
            if not isinstance(value, (list, tuple)) or len(value) != 3:
                raise TypeError
            return [float(v) for v in value]
        return str(value)
    except (TypeError, ValueError):
        raise KitError(f"{source}: '{name}' must be {base}, got {value!r}") from None


def load_config(yaml_path: str | None = None, overrides: dict | None = None,
                base: dict | None = None) -> Config:
    """Build a Config: defaults, then `base` (e.g. the demo's settings), then the YAML file, then overrides."""
    values: dict = {}
    layers = [(base or {}, "built-in settings")]
    if yaml_path:
        path = Path(yaml_path)
        if not path.is_file():
            raise KitError(f"config file {path} does not exist; pass --config with a YAML file (see configs/)")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise KitError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise KitError(f"config file {path} must be a mapping of name: value")
        layers.append((loaded, f"config file {path}"))
    layers.append(({k: v for k, v in (overrides or {}).items() if v is not None}, "command line"))
    for layer, source in layers:
        for name, value in layer.items():
            if name not in FIELD_TYPES:
                raise KitError(f"{source}: unknown setting '{name}'; known settings: {', '.join(FIELD_TYPES)}")
            values[name] = _check_type(name, value, source)
    cfg = Config(**values)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    checks = [
        (cfg.num_folds is None or cfg.num_folds >= 2, "num_folds must be at least 2"),
        (cfg.epochs >= 1, "epochs must be at least 1"),
        (cfg.batch_size >= 1, "batch_size must be at least 1"),
        (cfg.accum_steps >= 1, "accum_steps must be at least 1"),
        (cfg.img_size >= 8, "img_size must be at least 8"),
        (cfg.lr > 0, "lr must be positive"),
        (cfg.agc_clip >= 0, "agc_clip must be >= 0 (0 disables AGC)"),
        (cfg.optimizer in ("sgd", "adamw"), f"optimizer must be sgd or adamw, got {cfg.optimizer!r}"),
        (cfg.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {cfg.device!r}"),
        (cfg.num_workers >= 0, "num_workers must be >= 0"),
        (0 <= cfg.ema_decay < 1, "ema_decay must be in [0, 1)"),
    ]
    for ok, message in checks:
        if not ok:
            raise KitError(f"invalid setting: {message}")
    from .metrics import METRICS
    if cfg.metric not in METRICS:
        raise KitError(f"invalid setting: metric must be one of {', '.join(METRICS)}, got {cfg.metric!r}")


def save_config(cfg: Config, path: str | Path) -> None:
    from .atomic import write_text
    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
