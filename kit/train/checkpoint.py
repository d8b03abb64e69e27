"""Checkpoint files: written atomically, read with torch.load(weights_only=True) only. What they hold is
kit/train/state.py's business (its docstring describes best.pt and last.pt)."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from kit.core.atomic import atomic_path
from kit.core.errors import KitError


def save(obj: dict, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def read(path: str | Path):
    """torch.load(weights_only=True): tensors and plain data only, so a crafted file cannot run code."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KitError(f"refusing to load {path}: it contains pickled objects other than tensors and plain data "
                       f"({first}). Loading it could run arbitrary code; only use checkpoints from sources you "
                       f"trust, re-saved as plain state dicts") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise KitError(f"cannot read checkpoint {path} ({type(e).__name__}: {e}); the file is damaged or not a "
                       f"PyTorch checkpoint. Retrain this fold, or restore the file") from None
    return obj


def load(path: str | Path) -> dict:
    """A kit checkpoint (best.pt / last.pt), read safely."""
    obj = read(path)
    if not isinstance(obj, dict) or "model" not in obj:
        raise KitError(f"{path} is not a kit checkpoint (no 'model' entry)")
    return obj
