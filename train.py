"""Train fold models: `python train.py --fold 0` (the digits demo) or `--data-dir DIR --fold all`.

Settings: kit/config.py lists every knob with its default; a --config YAML file and the flags below override.
"""
import argparse

from kit.cli import main_guard


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file of settings (see configs/)")
    p.add_argument("--data-dir", help="competition folder; omit to run the embedded digits demo")
    p.add_argument("--fold", default="0", help="fold number, or 'all' (default 0)")
    p.add_argument("--num-folds", type=int)
    p.add_argument("--folds-csv")
    p.add_argument("--run-dir")
    p.add_argument("--model", help="any timm model name, e.g. eca_nfnet_l0, nfnet_l0, dm_nfnet_f0")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--pretrained-file", help="local weights file for --model (offline machines)")
    p.add_argument("--img-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--accum-steps", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=["sgd", "adamw"])
    p.add_argument("--agc-clip", type=float, help="AGC clip factor lambda; 0 disables")
    p.add_argument("--metric", help="accuracy, macro_f1, log_loss or roc_auc")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--num-workers", type=int)
    p.add_argument("--save-every-steps", type=int)
    p.add_argument("--tensorboard", action="store_true", default=None, help="also log to <run dir>/fold<k>/tb")
    p.add_argument("--resume", action="store_true", help="continue each fold from its last.pt")
    p.add_argument("--force-resume", action="store_true", help="resume even where settings changed")
    return p.parse_args()


def main():
    args = parse_args()
    from kit import demo, training
    from kit.config import load_config

    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "fold", "resume", "force_resume")}
    cfg = load_config(args.config, overrides)
    if cfg.data_dir is None:
        root = demo.materialize()
        cfg = load_config(args.config, {**overrides, "data_dir": str(root)}, base=demo.DEMO_CONFIG)
    training.run(cfg, args.fold, args.resume, args.force_resume)


if __name__ == "__main__":
    main_guard(main)
