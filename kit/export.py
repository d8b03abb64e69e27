"""Fold checkpoints -> one ONNX ensemble graph, checked against PyTorch before it is written.

Graph contract (what kit.predict and any deployment rely on):
  input  "images"         uint8 [N, H, W, 3], RGB, H = W = the training img_size (kit.images.load_rgb output)
  output "probabilities"  float32 [N, C], the mean over folds (and flip views) of each model's softmax
  metadata_props          "kit.*" keys, JSON values: see METADATA_KEYS
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame, ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d, StdConv2dSame

from . import __version__, checkpoint
from .atomic import atomic_path
from .errors import KitError
from .images import load_rgb
from .engine import oof_arrays, read_oof_rows
from .graph import simplify
from .metrics import score
from .model import ImageNormalizer, create_model

PARITY_ATOL = 1e-4
OPSET = 18
METADATA_KEYS = ("classes", "img_size", "mean", "std", "model", "folds", "fold_scores", "cv_score", "metric",
                 "tta", "int8", "id_col", "label_col", "kit_version")
_STD_CONVS = (StdConv2d, StdConv2dSame, ScaledStdConv2d, ScaledStdConv2dSame)


def standardized_weight(conv: torch.nn.Conv2d) -> torch.Tensor:
    """The weight a weight-standardized conv computes on every forward, computed once, the same way timm does."""
    gain = (conv.gain * conv.scale).view(-1) if hasattr(conv, "gain") else None
    return F.batch_norm(conv.weight.reshape(1, conv.out_channels, -1), None, None, weight=gain, training=True,
                        momentum=0.0, eps=conv.eps).reshape_as(conv.weight)


@torch.no_grad()
def fold_weight_standardization(model: torch.nn.Module) -> int:
    """Replace every weight-standardized conv by a plain conv holding its standardized weight, in place.

    Inference then does no per-call standardization (exported naively, it is a BatchNormalization, mean and
    variance over every conv weight on every call). Returns the number of convs folded.
    """
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, _STD_CONVS)]
    for name, conv in targets:
        cls = Conv2dSame if getattr(conv, "same_pad", False) else torch.nn.Conv2d
        plain = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                    padding=0 if cls is Conv2dSame else conv.padding, dilation=conv.dilation, groups=conv.groups,
                    bias=conv.bias is not None)
        plain.weight.copy_(standardized_weight(conv))
        if conv.bias is not None:
            plain.bias.copy_(conv.bias)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, plain)
    return len(targets)


class Ensemble(torch.nn.Module):
    """uint8 NHWC images -> normalize -> [image, flipped image] -> every fold model -> softmax -> mean."""

    def __init__(self, models: list[torch.nn.Module], mean: list, std: list, tta: bool):
        super().__init__()
        self.models = torch.nn.ModuleList(models)
        self.normalize = ImageNormalizer(mean, std)
        self.tta = tta

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images)
        views = 2 if self.tta else 1
        if self.tta:
            x = torch.cat([x, x.flip(3)])
        probs = torch.stack([m(x).softmax(-1) for m in self.models]).mean(0)
        return probs.view(views, images.shape[0], -1).mean(0)


def _epochs_done(fold_dir: Path) -> int:
    path = fold_dir / "metrics.csv"
    return len(path.read_text().strip().splitlines()) - 1 if path.is_file() else 0


def load_fold_models(run_dir: Path, folds: list[int] | None) -> tuple[list[torch.nn.Module], list[dict]]:
    """Best checkpoint of each requested fold, in eval mode. By default every fold that finished training, so
    folds trained as separate jobs can be ensembled as they complete; a fold still training is left out."""
    available = sorted(int(p.parent.name[4:]) for p in run_dir.glob("fold*/best.pt") if p.parent.name[4:].isdigit())
    if not available:
        raise KitError(f"no trained folds in {run_dir} (no fold<k>/best.pt); train first: python train.py --fold 0")
    if folds is None:
        epochs = checkpoint.load(run_dir / f"fold{available[0]}" / "best.pt")["config"]["epochs"]
        folds = [k for k in available if _epochs_done(run_dir / f"fold{k}") >= epochs]
        unfinished = sorted(set(available) - set(folds))
        if not folds:
            raise KitError(f"no fold in {run_dir} has finished its {epochs} epochs yet (in progress: {unfinished}); "
                           f"wait, or pass --folds to export a fold's best checkpoint so far")
        if unfinished:
            print(f"export: leaving out fold(s) {unfinished}, still training")
    missing = [k for k in folds if k not in available]
    if missing:
        raise KitError(f"fold(s) {missing} have no best.pt in {run_dir}; trained folds: {available}")
    models, ckpts = [], []
    for k in folds:
        ckpt = checkpoint.load(run_dir / f"fold{k}" / "best.pt")
        cfg = ckpt["config"]
        if ckpts and (cfg["model"], cfg["img_size"], ckpt["classes"], ckpt["mean"], ckpt["std"]) != \
                (ckpts[0]["config"]["model"], ckpts[0]["config"]["img_size"], ckpts[0]["classes"],
                 ckpts[0]["mean"], ckpts[0]["std"]):
            raise KitError(f"fold {k} in {run_dir} was trained with another model, image size, normalization or "
                           f"class list than fold {folds[0]}; they cannot form one ensemble")
        model = create_model(cfg["model"], len(ckpt["classes"]))
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise KitError(f"{run_dir}/fold{k}/best.pt does not match model {cfg['model']!r} with "
                           f"{len(ckpt['classes'])} classes: {str(e).splitlines()[0]}") from None
        models.append(model.eval())
        ckpts.append(ckpt)
    return models, ckpts


def export_onnx(module: torch.nn.Module, img_size: int, path: Path) -> None:
    """torch.export-based ONNX export with a dynamic batch axis."""
    example = torch.zeros(2, img_size, img_size, 3, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module.eval(), (example,), input_names=["images"],
                                    output_names=["probabilities"], opset_version=OPSET, dynamo=True,
                                    dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
                                    verbose=False, external_data=False)
    model = program.model_proto
    simplify(model.graph)
    onnx.save(model, str(path))


def set_metadata(path: Path, metadata: dict) -> None:
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=f"kit.{key}", value=json.dumps(value))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def parity_check(onnx_path: Path, reference: torch.nn.Module, images: np.ndarray, atol: float = PARITY_ATOL) -> float:
    """Run the graph in onnxruntime and the PyTorch module on the same images; raise unless they agree."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images})[0]
    with torch.no_grad():
        want = reference(torch.from_numpy(images)).numpy()
    err = float(np.abs(got - want).max())
    flips = int((got.argmax(1) != want.argmax(1)).sum())
    if not err <= atol or flips:
        raise KitError(f"ONNX parity check failed: max |Δprob| = {err:.3g} against PyTorch (limit {atol:g}, "
                       f"missed by {max(err - atol, 0):.3g}), {flips} of {len(images)} predictions differ; "
                       f"nothing was written")
    return err


def oof_images(run_dir: Path, folds: list[int], data_dir: str, cfg: dict, limit: int | None) -> tuple[np.ndarray, np.ndarray, list]:
    """Validation images of the included folds (uint8 NHWC) and their class indices, up to `limit`."""
    from .data import resolve_images
    rows = read_oof_rows([run_dir / f"fold{k}" / "oof.csv" for k in folds])
    if limit is not None and len(rows) > limit:
        rows = [rows[i] for i in np.random.default_rng(0).choice(len(rows), limit, replace=False)]
    root = Path(data_dir)
    paths = resolve_images(root / cfg["train_images"], [r["image_id"] for r in rows], root / cfg["train_csv"])
    images = np.stack([load_rgb(p, cfg["img_size"]) for p in paths])
    return images, np.array([r["label"] for r in rows]), rows


def export(run_dir: str | Path, out: str | Path | None = None, folds: list[int] | None = None, tta: bool | None = None,
           int8: bool = False, data_dir: str | None = None, parity_images: int = 64) -> dict:
    """Export the fold ensemble of `run_dir` to ONNX (and int8 if asked). Returns a summary of what it did.

    Flip TTA defaults to what training did: a model trained without horizontal flips (digits, text) is not
    flip invariant, and averaging in mirrored views then costs accuracy (on the demo: 0.99 -> 0.94).
    """
    run_dir = Path(run_dir)
    models, ckpts = load_fold_models(run_dir, folds)
    folds = [c["fold"] for c in ckpts]
    cfg = ckpts[0]["config"]
    classes, img_size = ckpts[0]["classes"], cfg["img_size"]
    data_dir = data_dir or cfg["data_dir"]
    tta = cfg["aug_hflip"] > 0 if tta is None else tta
    reference = Ensemble(models, ckpts[0]["mean"], ckpts[0]["std"], tta).eval()     # as trained
    folded = [copy.deepcopy(m) for m in models]
    n_folded = sum(fold_weight_standardization(m) for m in folded)
    ensemble = Ensemble(folded, ckpts[0]["mean"], ckpts[0]["std"], tta).eval()
    oof_y, oof_probs = oof_arrays(read_oof_rows([run_dir / f"fold{k}" / "oof.csv" for k in folds]), classes)
    metadata = {
        "classes": classes, "img_size": img_size, "mean": ckpts[0]["mean"], "std": ckpts[0]["std"],
        "model": cfg["model"], "folds": folds, "fold_scores": [c["score"] for c in ckpts],
        "cv_score": score(cfg["metric"], oof_y, oof_probs), "metric": cfg["metric"], "tta": tta, "int8": False,
        "id_col": cfg["id_col"], "label_col": cfg["label_col"], "kit_version": __version__,
    }
    images, labels, _ = oof_images(run_dir, folds, data_dir, cfg, parity_images)
    out = Path(out) if out else run_dir / "ensemble.onnx"
    summary = {"path": str(out), "folds": folds, "folded_convs": n_folded}
    with atomic_path(out) as tmp:
        export_onnx(ensemble, img_size, tmp)
        set_metadata(tmp, metadata)
        summary["parity_max_abs_diff"] = parity_check(tmp, reference, images)
    print(f"export: {len(folds)} fold(s) {folds} of {cfg['model']} -> {out} ({n_folded} weight-standardized convs "
          f"folded, TTA {'on' if tta else 'off'}, parity max |Δprob| {summary['parity_max_abs_diff']:.2e})")
    if int8:
        from .quantize import quantize
        summary["int8"] = quantize(out, run_dir, folds, data_dir, cfg, metadata)
    return summary
