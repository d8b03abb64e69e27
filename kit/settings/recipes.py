"""Named recipes: settings that lie beneath everything a competitor sets (a --config file, flags).

Each recipe changes only the settings it names; the rest keep the defaults of kit/settings/config.py. `auto` (the
default) picks `scratch` when training starts from random weights and `finetune` when it starts from pretrained
ones. bench/recipe.py is the benchmark that chose the `scratch` and `finetune` values (bench/RESULTS.md has its
numbers).
"""
from __future__ import annotations

from kit.core.errors import KitError

RECIPES: dict[str, dict] = {
    # Fine-tuning from pretrained weights, chosen by measurement (bench/RESULTS.md "Fine-tuning, second round"): the
    # kit's own checkpoint (bench/pretrain.py: nf_resnet26 pretrained on `pretrain-mix`, photo windows and scanned
    # letters that no evaluation set holds), 8 epochs at 32 px, 2 seeds x 5 folds, held-out test accuracy against the
    # values this recipe had until 2026-12-08 (the NFNet paper's augmentation at a fine-tuning strength: source crops
    # 0.35, RandAugment 7 x 2, MixUp 0.2 / CutMix 1.0 at p 0.5): photo-patches +6.54 pt, digits-hard +7.67 pt (p 0.002
    # each), and 12 % less time. On validation (seed 0, where the choice was made) a lower lr (lr_base 0.16) lost
    # 1.8 / 2.0 pt and timm's layer-wise lr decay 0.8 lost 2.2 / 1.1 pt, so neither is set. The old values are flags
    # away (--crop-scale 0.35 --randaugment 7 --mixup 0.2 --cutmix 1.0 --mix-prob 0.5) for ImageNet weights at 224 px
    # and long runs, which cannot be measured here.
    "finetune": dict(drop_rate=0.0, drop_path_rate=0.0, aug_coarse_dropout=0.0, aug_shift_scale_rotate=0.0,
                     aug_brightness_contrast=0.0),
    # Small images trained from random weights for a short schedule, chosen by bench/recipe.py (bench/RESULTS.md):
    # on 8-epoch runs at 32 px, MixUp/CutMix, RandAugment, source crops and FixRes each cost accuracy, and so did
    # dropout, stochastic depth and coarse dropout: a short run on ~1,000 images underfits before it overfits.
    # The model too: at equal wall time per fold (bench/recipe.py, digits-hard 2 seeds x 5 folds, --time-budget
    # 118 s), nf_resnet26 scored +3.7 pt held-out test accuracy over eca_nfnet_l0 (p 0.002) and +1.9 pt over the
    # hand-written ResNet18 given the same seconds, where eca_nfnet_l0 lost 1.8 pt to it; +0.7 pt over eca_nfnet_l0
    # on photo-patches (3 folds). It runs ~2x the epochs in the same time. timm has no pretrained nf_resnet26, so
    # finetune keeps eca_nfnet_l0. nf_regnet_b0 lost (0.51/0.46 on folds 0-1 at 118 s).
    # Shift-scale-rotate and brightness/contrast off too (flips stay), chosen on validation accuracy at the hand
    # loop's seconds (--time-budget 42-44 s, 3-4 epochs; seed 0, 5 folds): digits-hard +3.5 pt, photo-patches +2.1,
    # digits -0.2 (noise); at 8 epochs (3 folds) digits-hard +2.8, photo-patches +0.9 (bench/RESULTS.md "Less
    # augmentation for short runs"). A shorter warmup (0.3 epochs) added nothing on validation and was not kept.
    "scratch": dict(model="auto", drop_rate=0.0, drop_path_rate=0.0, aug_coarse_dropout=0.0,
                    aug_shift_scale_rotate=0.0, aug_brightness_contrast=0.0),
    # The NFNet paper's ImageNet recipe (Brock et al. 2021; deepmind-research nfnets/experiment_nfnets.py, F0):
    # SGD + Nesterov at lr 0.1 per 256 images, AGC 0.01, label smoothing 0.1, EMA, stochastic depth 0.25,
    # dropout 0.2, CutMix + MixUp + RandAugment (4 layers, magnitude 5), train at 3/4 of the test size.
    "paper": dict(optimizer="sgd", lr_base=0.1, weight_decay=2e-5, label_smoothing=0.1, agc_clip="0.01",
                  drop_path_rate=0.25, drop_rate=0.2, mixup=0.2, cutmix=1.0, mix_prob=1.0, randaugment=5,
                  randaugment_ops=4, crop_scale=0.08, aug_shift_scale_rotate=0.0, aug_brightness_contrast=0.0,
                  aug_coarse_dropout=0.0, test_scale=4 / 3),
}


def resolve(name: str, pretrained: bool) -> tuple[str, dict]:
    """(the recipe's name, its settings); `auto` becomes scratch or finetune."""
    if name == "auto":
        name = "finetune" if pretrained else "scratch"
    if name not in RECIPES:
        raise KitError(f"unknown recipe {name!r}; recipes: auto, {', '.join(RECIPES)}")
    return name, dict(RECIPES[name])
