"""Checkpoint files: written atomically, read with torch.load(weights_only=True) only. What they hold is
kit/store/state.py's business (its docstring describes best.pt and last.pt)."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from kit.core.atomic import atomic_path
from kit.core.errors import KitError


def save(obj: dict, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def refused_unpickling(e: Exception) -> bool:
    """torch.load(weights_only=True) refused a pickled global: torch raises UnpicklingError, and timm's
    load_state_dict re-raises it as a RuntimeError that names the globals (a file of junk bytes gets a RuntimeError
    without them: not a checkpoint, said as such)."""
    return isinstance(e, pickle.UnpicklingError) or "Unsupported global" in str(e)


def refusal(path: str | Path, e: Exception) -> KitError:
    """The one message for a file that torch.load(weights_only=True) refused to unpickle."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return KitError(f"refusing to load {path}: it contains pickled objects other than tensors and plain data "
                    f"({first}). Loading it could run arbitrary code; only use checkpoints from sources you trust, "
                    f"re-saved as plain state dicts")


def read(path: str | Path):
    """torch.load(weights_only=True): tensors and plain data only, so a crafted file cannot run code."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise refusal(path, e) from None
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
