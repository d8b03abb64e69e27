"""Every training knob as a plain named value. Precedence: defaults < YAML file < command-line flags.

Each field's `help` is also its command-line flag's help: kit.settings.cli generates the flags from this class, so the
two cannot drift apart.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

import yaml

from kit.core.entry import option
from kit.core.errors import KitError


Paths = list        # a list of paths (a repeatable flag); `list` alone is 3 numbers (mean, std)


def knob(default, help: str, choices: tuple | None = None, **flag):
    """A setting, and its train.py flag (kit.core.entry.option: the one way every command's flags are made)."""
    return option(default, help, choices=choices, **flag)


@dataclass
class Config:
    # --- competition folder (Kaggle layout; names differ between competitions) ---
    data_dir: Optional[str] = knob(None, "competition folder; omit to run the embedded digits demo")
    train_csv: str = knob("train.csv", "training table, relative to the data dir")
    train_images: str = knob("train_images", "folder of the training images")
    test_images: str = knob("test_images", "folder of the test images")
    sample_submission: str = knob("sample_submission.csv", "the competition's sample submission")
    id_col: str = knob("image_id", "image id column of train.csv and sample_submission.csv")
    label_col: str = knob("label", "label column of train.csv")
    group_col: Optional[str] = knob(None, "keep rows sharing this column's value (patients, sessions) in one fold")
    missing_values: Optional[str] = knob(None, "label cells and group ids that mean a missing value, comma-separated "
                                               "(default: nan, NaN, None, null, NA, N/A, <NA>, #N/A, ...); '' for none "
                                               "(a class really named NA)", parse=str)
    # --- task: what a label is (kit/core/task/) ---
    task: str = knob("auto", "multiclass, multilabel (space-separated tags, or one 0/1 column per tag) or regression; "
                             "auto infers it from train.csv", ("auto", "multiclass", "multilabel", "regression"))
    regression_loss: str = knob("mse", "regression loss: mse, huber, or bce on the target scaled to [0, 1]",
                                ("mse", "huber", "bce"))
    min_labels: int = knob(0, "multilabel submissions: at least this many tags per image (the most probable)")
    # --- folds ---
    folds_csv: str = knob("folds/folds.csv", "the persisted split, created on first use")
    num_folds: Optional[int] = knob(None, "folds of a new split (default 5); else what folds_csv holds")
    seed: int = knob(42, "seed of the split, the initial weights, the data order and the augmentation")
    # --- outputs ---
    run_dir: str = knob("runs/default", "where checkpoints, OOF predictions and reports go")
    # --- distillation and pseudo-labels (kit/train/teacher.py) ---
    teacher: Optional[Paths] = knob(None, "a trained run whose fold models teach this one (repeat it for a blend of "
                                          "runs); student fold k learns from teacher fold k only", metavar="PATH")
    distill_weight: float = knob(0.5, "share of the teacher's soft targets in the loss (the rest: the hard labels)")
    distill_temperature: float = knob(2.0, "softening of the teacher's and the student's outputs in the distillation "
                                           "loss (multiclass, multilabel)")
    pseudo_label: bool = knob(False, "also train on the competition's test images, with the teacher's soft targets")
    pseudo_threshold: float = knob(0.0, "only test images the teacher is at least this confident about (its largest "
                                        "probability; multilabel: its least certain tag)")
    pseudo_weight: float = knob(1.0, "weight of a pseudo-labelled image in the loss, relative to a training image")
    # --- recipe: named settings beneath everything set explicitly (kit/settings/recipes.py) ---
    recipe: str = knob("auto", "scratch, finetune, paper, or auto: scratch without pretrained weights, finetune with "
                               "them. Settings you give win over the recipe's")
    # --- model ---
    model: str = knob("eca_nfnet_l0", "any timm model name, e.g. eca_nfnet_l0, nfnet_l0, dm_nfnet_f0, nf_resnet18 "
                                         "(kit/train/nf_resnet.py), or auto: the from-scratch model for the data and the "
                                         "time budget (kit/train/choice.py; the scratch recipe's default)")
    pretrained: bool = knob(True, "start from timm's pretrained weights (downloaded once, then cached)")
    pretrained_file: Optional[str] = knob(None, "local weights file for the model (offline machines)")
    drop_rate: float = knob(0.2, "dropout before the classifier")
    drop_path_rate: float = knob(0.1, "stochastic depth rate")
    img_size: int = knob(224, "training image size (pixels, square)")
    test_img_size: Optional[int] = knob(None, "validation, OOF, export and prediction size; above img_size for "
                                              "FixRes (train low, test high). Default: img_size * test_scale")
    test_scale: float = knob(1.0, "test_img_size relative to img_size when test_img_size is not set (rounded to "
                                  "a multiple of 8)")
    crop_scale: float = knob(0.0, "RandomResizedCrop from the source image, area in [crop_scale, 1] (natural "
                                  "photos); 0: resize the whole image first (tiny images such as digits)")
    mean: Optional[list] = knob(None, "normalization mean (3 values); default: the model's pretrained config",
                               parse=float, nargs=3, metavar="X")
    std: Optional[list] = knob(None, "normalization std (3 values); default: the model's pretrained config",
                              parse=float, nargs=3, metavar="X")
    # --- optimization ---
    epochs: int = knob(10, "training epochs per fold")
    time_budget: Optional[str] = knob(None, "wall time per fold, e.g. 20m or 2h: the epochs (and the schedule) are "
                                            "planned from the measured time of the fold's first steps; overrides "
                                            "epochs")
    batch_size: Optional[int] = knob(None, "images per batch (per process under torchrun); the learning rate follows "
                                           "the global batch (lr_base). Default: the model's (batch_for)")
    accum_steps: int = knob(1, "optimizer step every N batches; effective batch = N * batch_size")
    optimizer: str = knob("sgd", "sgd (Nesterov, as in the NFNet paper) or adamw", ("sgd", "adamw"))
    lr: Optional[float] = knob(None, "peak learning rate; default: lr_base scaled to the global batch (batch_size x "
                                     "accum_steps x processes), as the saved config then records")
    lr_base: Optional[float] = knob(None, "peak learning rate per 256 images of global batch, scaled linearly (SGD; "
                                          "Goyal et al. 2017) or by the square root (AdamW) to the batch; default 0.4 "
                                          "for SGD (0.05 at batch 32), 0.002 for AdamW (0.001 at batch 64)")
    layer_decay: Optional[float] = knob(None, "layer-wise learning-rate decay (timm's, for fine-tuning): the head "
                                              "trains at the peak lr and each block group below it at this factor "
                                              "times the one above; default: one lr for every layer")
    momentum: float = knob(0.9, "SGD momentum")
    weight_decay: float = knob(2e-5, "weight decay")
    warmup_epochs: float = knob(1.0, "linear warmup before the cosine decay, in epochs")
    min_lr: float = knob(1e-6, "learning rate at the end of the cosine decay")
    label_smoothing: float = knob(0.1, "label smoothing of the training loss")
    # --- class imbalance (bench/recipe.py measured them on a 1:20 long tail, bench/RESULTS.md) ---
    sampler: str = knob("none", "images per epoch: none (each once), balanced (as many of each class), sqrt (in "
                                "proportion to the square root of each class's count); multilabel: by each image's "
                                "rarest tag", ("none", "balanced", "sqrt"))
    class_weights: str = knob("none", "loss weight per class: none, or auto (inverse frequency, mean 1 over the "
                                      "training images)", ("none", "auto"))
    loss: str = knob("ce", "classification loss: ce (cross-entropy; BCE for multilabel) or focal (Lin et al. 2017)",
                     ("ce", "focal"))
    focal_gamma: float = knob(2.0, "focusing parameter of the focal loss")
    avg_top_k: int = knob(1, "keep the average of the K best epochs' (EMA) weights when it scores better than "
                             "the best epoch, which a tie keeps (1: the best epoch)")
    # auto: lambda from the batch size and optimizer by the rule bench/agc_rule.py measured (kit/train/agc.py)
    agc_clip: str = knob("auto", "AGC clip factor lambda, or auto (from batch size and optimizer); 0 disables")
    agc_eps: float = knob(1e-3, "AGC floor on a unit's weight norm")
    ema: bool = knob(True, "evaluate and keep an exponential moving average of the weights")
    ema_decay: float = knob(0.999, "EMA decay (with warmup: short runs get a shorter horizon)")
    precision: str = knob("auto", "training arithmetic: fp32, bf16 (autocast; CPUs with AVX512-BF16 or AMX, CUDA "
                                  "GPUs from Ampere on) or fp16 (CUDA, with loss scaling; gradients are unscaled before "
                                  "AGC); auto: fp16 on CUDA, fp32 on the CPU (bf16 measured no faster there: "
                                  "kit/train/device.py). Weights, AGC, the loss and validation stay in fp32",
                          ("auto", "fp32", "bf16", "fp16"))
    # --- augmentation (probabilities; 0 turns one off) ---
    aug_hflip: float = knob(0.5, "probability of a horizontal flip")
    aug_vflip: float = knob(0.0, "probability of a vertical flip")
    aug_shift_scale_rotate: float = knob(0.5, "probability of a random shift/scale/rotation")
    aug_brightness_contrast: float = knob(0.5, "probability of a random brightness/contrast change")
    aug_coarse_dropout: float = knob(0.3, "probability of cutting out random rectangles")
    randaugment: int = knob(0, "RandAugment magnitude 1-10 (timm's, in the loader workers); 0: off")
    randaugment_ops: int = knob(2, "RandAugment operations per image")
    trivialaugment: bool = knob(False, "TrivialAugment (one random op at a random magnitude) instead of RandAugment")
    mixup: float = knob(0.0, "MixUp alpha (timm's Mixup, on the device after normalization); 0: off")
    cutmix: float = knob(0.0, "CutMix alpha; 0: off")
    mix_prob: float = knob(1.0, "probability that a batch is mixed at all")
    mix_switch_prob: float = knob(0.5, "probability of CutMix instead of MixUp when both are on")
    mix_stop_epoch: int = knob(-1, "epochs from this one on train on clean images (negative: counted from the end, "
                                   "-1 = the last epoch)")
    # --- evaluation ---
    metric: str = knob("auto", "validation metric, the best epoch by it is kept; auto: accuracy (multiclass), f1_micro "
                               "(multilabel), rmse (regression)")
    val_every: Optional[int] = knob(None, "validate every N epochs, and always after the last; default 1, and under "
                                          "--time-budget as rarely as keeps validation under a tenth of the fold's time")
    # --- runtime ---
    device: str = knob("auto", "auto, cpu or cuda", ("auto", "cpu", "cuda"))
    cache_images: str = knob("auto", "decode the images once into memory (uint8) instead of every epoch: on, off, or "
                                     "auto: on when they fit cache_memory_mb and are resized whole (crop_scale 0)",
                             ("auto", "on", "off"))
    cache_memory_mb: int = knob(4096, "the most memory the image cache may take, in MB")
    num_workers: Optional[int] = knob(None, "data-loader worker processes; default 0 when the images are cached and "
                                            "augmented in this process, else 2")
    # NHWC activations. None: on for CUDA (tensor-core convs under AMP), off on the CPU, where bench/train_step.py
    # measured NHWC training steps 2-4 % slower at 32-224 px
    channels_last: Optional[bool] = knob(None, "NHWC activations (default: on for CUDA only)")
    save_every_steps: int = knob(0, "also save a resumable checkpoint every N optimizer steps")
    deterministic: bool = knob(True, "deterministic algorithms (bit-identical CPU runs)")
    tensorboard: bool = knob(False, "also log epoch scalars to <run dir>/fold<k>/tb (needs tensorboard)")
    tracker: str = knob("none", "also log settings, epochs and reports to: none, mlflow, tensorboard, or several joined "
                                "by commas (kit/train/tracking.py; mlflow: pip install -e '.[track]')")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in fields(Config)}
MAY_BE_EMPTY = {"missing_values"}          # an empty string means something there: no text is missing


def base_type(name: str) -> str:
    """'int', 'float', 'bool', 'str', 'list' (3 numbers) or 'Paths' (the annotation without Optional)."""
    return FIELDS[name].type.replace("Optional[", "").rstrip("]")


def _check_type(name: str, value: Any, source: str) -> Any:
    if value is None:
        if "Optional" in FIELDS[name].type:
            return None
        raise KitError(f"{source}: '{name}' cannot be empty")
    base = base_type(name)
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
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise TypeError
            return float(value)
        if base == "Paths":
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, (list, tuple)) or not value or not all(str(v).strip() for v in value):
                raise TypeError
            return [str(v) for v in value]
        if base == "list":
            if not isinstance(value, (list, tuple)) or len(value) != 3:
                raise TypeError
            if not all(math.isfinite(float(v)) for v in value):
                raise TypeError
            return [float(v) for v in value]
        if not str(value).strip() and name not in MAY_BE_EMPTY:
            raise KitError(f"{source}: '{name}' is empty; give a value (or leave the setting out for its default)")
        return str(value)
    except (TypeError, ValueError, OverflowError):
        raise KitError(f"{source}: '{name}' must be {'a finite ' if base == 'float' else ''}{base}, got {value!r}") \
            from None


def read_yaml(path: str | Path, what: str = "config file") -> dict:
    """A YAML mapping from a file, with one clear error for every way the file can be unusable."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{what} {path} does not exist; pass --config with a YAML file (see configs/)")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise KitError(f"{what} {path} is not a text file ({e.reason} at byte {e.start}); pass a UTF-8 YAML file") from None
    except yaml.YAMLError as e:
        raise KitError(f"{what} {path} is not valid YAML: {e}") from None
    if not isinstance(loaded, dict):
        raise KitError(f"{what} {path} must be a mapping of name: value")
    return loaded


# settings of earlier versions and what they are now: a saved config.yaml still loads, a YAML file is told the new name
RENAMED = {"amp": ("precision", lambda on: "auto" if on else "fp32")}


def _renamed(layer: dict, source: str, saved: bool) -> dict:
    """A saved config's old settings under their new names; a file the user writes is asked to rename them."""
    for old, (new, convert) in RENAMED.items():
        if old in layer:
            if not saved:
                raise KitError(f"{source}: the setting '{old}' is now '{new}' "
                               f"({one_of(FIELDS[new].metadata['choices'])}); rename it")
            layer = {**{k: v for k, v in layer.items() if k != old}, new: layer.get(new, convert(layer[old]))}
    return layer


def load_config(yaml_path: str | None = None, overrides: dict | None = None,
                base: dict | None = None) -> Config:
    """Build a Config: defaults, the recipe's settings, then `base` (e.g. the demo's settings), then the YAML file,
    then overrides."""
    layers = [(base or {}, "built-in settings")]
    if yaml_path:
        layers.append((read_yaml(yaml_path), f"config file {yaml_path}"))
    layers.append(({k: v for k, v in (overrides or {}).items() if v is not None}, "command line"))
    values: dict = {}
    for layer, source in layers:
        layer = _renamed(layer, source, saved=source == "built-in settings")
        for name, value in layer.items():
            if name not in FIELDS:
                raise KitError(f"{source}: unknown setting '{name}'; known settings: {', '.join(FIELDS)}")
            values[name] = _check_type(name, value, source)
    from kit.settings.recipes import resolve
    recipe, settings = resolve(values.get("recipe", "auto"),
                               values.get("pretrained", True) or bool(values.get("pretrained_file")))
    cfg = Config(**{**settings, **values, "recipe": recipe})      # the recipe lies beneath every explicit value
    validate(cfg)
    return cfg


def from_dict(saved: dict, source: str) -> Config:
    """A Config saved by save_config (a run's config.yaml, a checkpoint's 'config')."""
    extra = sorted(set(saved) - set(FIELDS) - set(RENAMED))
    if extra:
        raise KitError(f"{source} has settings this kit does not know ({', '.join(extra)}); it was written by "
                       f"another version of the kit")
    return load_config(None, None, base=saved)


def one_of(choices) -> str:
    """'a, b or c'"""
    choices = [str(c) for c in choices]
    return choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"


def _duration(text: str) -> bool:
    from kit.core.entry import parse_duration
    try:
        return parse_duration(text, "m") > 0
    except KitError:
        return False


def _nonnegative(text: str) -> bool:
    try:
        return float(text) >= 0
    except ValueError:
        return False


def mixing(cfg: Config) -> bool:
    return (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.mix_prob > 0


# the batch a model trains at when batch_size is not set: measured under --time-budget (bench/RESULTS.md "Equal wall
# time, fourth wave"), nf_resnet18 scored higher at 64 than at 32 on three sets; 32 is the batch every other model's
# recipe was measured at
MODEL_BATCH = {"nf_resnet18": 64}
DEFAULT_BATCH = 32


def batch_for(cfg: Config) -> int:
    """The batch size: batch_size, or the model's when it is not set."""
    return cfg.batch_size if cfg.batch_size is not None else MODEL_BATCH.get(cfg.model, DEFAULT_BATCH)


LR_BASE = {"sgd": 0.4, "adamw": 0.002}          # per 256 images: 0.05 at batch 32 (SGD), 0.001 at batch 64 (AdamW)


def scaled_lr(cfg: Config, global_batch: int) -> float:
    """The peak learning rate for a global batch when `lr` is not set: lr_base per 256 images, scaled linearly
    (SGD, Goyal et al. 2017) or by the square root (AdamW) with the batch, as timm's train.py does."""
    base = cfg.lr_base if cfg.lr_base is not None else LR_BASE[cfg.optimizer]
    ratio = global_batch / 256
    return base * (ratio if cfg.optimizer == "sgd" else ratio ** 0.5)


def test_size(cfg: Config) -> int:
    """The size of validation, OOF, the exported graph and the predictor."""
    if cfg.test_img_size:
        return cfg.test_img_size
    return cfg.img_size if cfg.test_scale == 1 else max(8, int(round(cfg.img_size * cfg.test_scale / 8)) * 8)


def validate(cfg: Config) -> None:
    checks = [
        (cfg.num_folds is None or cfg.num_folds >= 2, "num_folds must be at least 2"),
        (0 <= cfg.distill_weight <= 1, "distill_weight must be in [0, 1]"),
        (cfg.time_budget is None or _duration(cfg.time_budget), f"time_budget must be a duration like 20m, 2h or 1h30m, "
                                                                 f"got {cfg.time_budget!r}"),
        (cfg.focal_gamma >= 0 and cfg.avg_top_k >= 1, "focal_gamma must be >= 0 and avg_top_k at least 1"),
        (cfg.distill_temperature > 0, "distill_temperature must be positive"),
        (0 <= cfg.pseudo_threshold <= 1 and cfg.pseudo_weight >= 0, "pseudo_threshold must be in [0, 1] and "
                                                                    "pseudo_weight >= 0"),
        (not cfg.pseudo_label or cfg.teacher, "pseudo_label needs a teacher (--teacher RUN_DIR) to label the test "
                                              "images"),
        (cfg.epochs >= 1, "epochs must be at least 1"),
        (cfg.batch_size is None or cfg.batch_size >= 1, "batch_size must be at least 1"),
        (cfg.accum_steps >= 1, "accum_steps must be at least 1"),
        (cfg.img_size >= 8 and (cfg.test_img_size is None or cfg.test_img_size >= 8),
         "img_size and test_img_size must be at least 8"),
        (cfg.crop_scale == 0 or 0 < cfg.crop_scale <= 1, "crop_scale must be 0 (off) or in (0, 1]"),
        (0.5 <= cfg.test_scale <= 4, "test_scale must be in [0.5, 4]"),
        (0 <= cfg.randaugment <= 30 and cfg.randaugment_ops >= 1, "randaugment must be a magnitude in 0..30 "
                                                                  "(0: off) and randaugment_ops at least 1"),
        (cfg.mixup >= 0 and cfg.cutmix >= 0, "mixup and cutmix are Beta alphas and must be >= 0 (0: off)"),
        (0 <= cfg.mix_prob <= 1 and 0 <= cfg.mix_switch_prob <= 1, "mix_prob and mix_switch_prob must be in [0, 1]"),
        (not mixing(cfg) or batch_for(cfg) % 2 == 0, "MixUp/CutMix mix each batch with its mirror and need an even "
                                                     "batch_size"),
        (cfg.lr is None or cfg.lr > 0, "lr must be positive"),
        (cfg.lr_base is None or cfg.lr_base > 0, "lr_base must be positive"),
        (cfg.layer_decay is None or 0 < cfg.layer_decay <= 1, "layer_decay must be in (0, 1] (1: one lr for every "
                                                              "layer)"),
        (cfg.val_every is None or cfg.val_every >= 1, "val_every must be at least 1"),
        (cfg.cache_memory_mb >= 0, "cache_memory_mb must be >= 0"),
        (cfg.agc_clip == "auto" or _nonnegative(cfg.agc_clip), f"agc_clip must be auto or a number >= 0 (0 "
                                                              f"disables AGC), got {cfg.agc_clip!r}"),
        (cfg.num_workers is None or cfg.num_workers >= 0, "num_workers must be >= 0"),
        (0 <= cfg.ema_decay < 1, "ema_decay must be in [0, 1)"),
        (0 <= cfg.seed < 2**32, "seed must be in 0 .. 2**32-1 (numpy's seed range)"),
        (0 <= cfg.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
        (0 <= cfg.drop_rate < 1 and 0 <= cfg.drop_path_rate < 1, "drop_rate and drop_path_rate must be in [0, 1)"),
        (0 <= cfg.momentum < 1, "momentum must be in [0, 1)"),
        (cfg.weight_decay >= 0 and cfg.min_lr >= 0 and cfg.warmup_epochs >= 0,
         "weight_decay, min_lr and warmup_epochs must be >= 0"),
        (cfg.agc_eps > 0, "agc_eps must be positive"),
        (cfg.save_every_steps >= 0, "save_every_steps must be >= 0 (0: only at the end of each epoch)"),
        (cfg.mean is None or all(0 <= v <= 1 for v in cfg.mean), "mean must be 3 values in [0, 1] (pixel scale 1)"),
        (cfg.std is None or all(v > 0 for v in cfg.std), "std must be 3 positive values"),
    ]
    for name in FIELDS:
        if name.startswith("aug_"):
            checks.append((0 <= getattr(cfg, name) <= 1, f"{name} is a probability and must be in [0, 1], got "
                                                         f"{getattr(cfg, name)}"))
    for name, f in FIELDS.items():
        choices = f.metadata["choices"]
        if choices:
            value = getattr(cfg, name)
            checks.append((value in choices, f"{name} must be {one_of(choices)}, got {value!r}"))
    for ok, message in checks:
        if not ok:
            raise KitError(f"invalid setting: {message}")
    from kit.core.metrics import METRIC_NAMES
    if cfg.metric != "auto" and cfg.metric not in METRIC_NAMES:
        raise KitError(f"invalid setting: metric must be auto or one of {one_of(METRIC_NAMES)}, got {cfg.metric!r}")
    if cfg.min_labels < 0:
        raise KitError("invalid setting: min_labels must be >= 0")


def save_config(cfg: Config, path: str | Path) -> None:
    from kit.core.atomic import write_text
    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
