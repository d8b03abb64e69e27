"""Named recipes: settings that lie beneath everything a competitor sets (a --config file, flags).

Each recipe changes only the settings it names; the rest keep the defaults of kit/settings/config.py. `auto` (the
default) picks `scratch` when training starts from random weights and `finetune` when it starts from pretrained
ones. bench/recipe.py is the benchmark that chose the `scratch` values (bench/RESULTS.md has its numbers).
"""
from __future__ import annotations

from kit.core.errors import KitError

RECIPES: dict[str, dict] = {
    # Natural photos fine-tuned from pretrained weights: the defaults of kit/settings/config.py plus the NFNet paper's
    # augmentation at a fine-tuning strength, crops from the source photo, and testing above the training size.
    # The values follow timm's fine-tuning practice and the paper; ImageNet weights cannot be downloaded on the
    # benchmark machine. Measured with the kit's own pretrained nf_resnet26 (bench/pretrain.py; photo-patches, 32 px,
    # 8 epochs, 3 folds): these values scored 7.7 pt below the same weights under `scratch` (bench/RESULTS.md
    # "Fine-tuning"). Kept for real pretrained weights at larger images, which is what it is for; not yet tuned.
    "finetune": dict(crop_scale=0.35, randaugment=7, randaugment_ops=2, mixup=0.2, cutmix=1.0, mix_prob=0.5,
                     aug_shift_scale_rotate=0.0, aug_brightness_contrast=0.0, aug_coarse_dropout=0.0),
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
