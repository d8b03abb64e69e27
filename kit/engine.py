"""Train one fold: data -> NFNet + AGC -> SGD/AdamW, warmup-cosine, EMA, AMP -> validation, checkpoints, OOF.

Determinism: the data order of an epoch and the augmentation of every sample are pure functions of
(seed, epoch, position), and the rest of the randomness (init, dropout) comes from torch's global RNG, whose
state goes into every resumable checkpoint. So a resumed run replays exactly what an uninterrupted one does.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.utils.deterministic
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from . import __version__, checkpoint, distributed
from .agc import adaptive_clip_grad_
from .atomic import write_csv
from .augment import train_transform
from .config import Config
from .data import Table
from .errors import KitError
from .images import load_rgb
from .lock import FoldLock
from .metrics import is_better, score
from .model import ImageNormalizer, create_model, normalization, split_head_params

METRICS_HEADER = ["epoch", "lr", "train_loss", "val_loss", "metric", "score", "is_best", "seconds",
                  "train_images_per_s"]


class ImageDataset(Dataset):
    """Items are keyed by (row index, augmentation seed); seed < 0 means no augmentation (validation).

    An item is (uint8 image [H, W, 3], class index): the layout the ONNX graph takes, normalized on the batch.
    """

    def __init__(self, paths: list[Path], targets: np.ndarray, size: int, transform=None):
        self.paths, self.targets, self.size, self.transform = paths, targets, size, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        i, seed = key
        image = load_rgb(self.paths[i], self.size)
        if seed >= 0 and self.transform is not None:
            self.transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
            image = self.transform(image=image)["image"]
        return torch.from_numpy(np.ascontiguousarray(image)), int(self.targets[i])


class EpochSampler(Sampler):
    """Keys (row, augmentation seed) of this process's share of each global batch.

    The epoch's order and every sample's augmentation seed depend only on (seed, epoch, position), so training
    resumes mid-epoch exactly, and N processes at batch B see the same global batches as one process at
    batch N*B. Validation (shuffle=False) takes every world-th row, no augmentation.
    """

    def __init__(self, indices: np.ndarray, seed: int, shuffle: bool, batch_size: int = 1, rank: int = 0,
                 world: int = 1):
        self.indices, self.seed, self.shuffle = indices, seed, shuffle
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.epoch, self.start_batch = 0, 0
        self.idle = False                   # yields nothing while set (see _start_workers)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    @property
    def global_batches(self) -> int:
        return len(self.indices) // (self.batch_size * self.world)

    def __len__(self) -> int:
        if self.idle:
            return 0
        if not self.shuffle:
            return len(self.indices[self.rank::self.world])
        return (self.global_batches - self.start_batch) * self.batch_size

    def __iter__(self):
        if self.idle:
            return
        if not self.shuffle:
            yield from ((int(i), -1) for i in self.indices[self.rank::self.world])
            return
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = self.indices[torch.randperm(len(self.indices), generator=g).numpy()]
        step = self.batch_size * self.world
        for k in range(self.start_batch, self.global_batches):
            first = k * step + self.rank * self.batch_size
            for pos in range(first, first + self.batch_size):
                seed = int(np.random.SeedSequence([self.seed, self.epoch, pos]).generate_state(1)[0])
                yield int(order[pos]), seed


def _worker_init(_):
    torch.set_num_threads(1)            # the workers are the parallelism; don't oversubscribe the cores


def _start_workers(loader: DataLoader) -> None:
    """Fork the loader's persistent workers now, with nothing to load.

    Forked while this process is small, they share no memory pages with the model and optimizer created
    afterwards; forked later, every page the training step writes is first copied (copy-on-write), which cost
    the epoch after the first validation ~10 % on the CPU (bench/train_step.py).
    """
    if loader.num_workers:
        loader.sampler.idle = True
        iter(loader)
        loader.sampler.idle = False


def _tensorboard(fold_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise KitError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(fold_dir / "tb"))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise KitError("--device cuda was asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(name)


def activation_layout(cfg: Config, device: torch.device) -> torch.memory_format:
    """channels_last where the config asks for it; by default on CUDA only (see Config.channels_last)."""
    on = device.type == "cuda" if cfg.channels_last is None else cfg.channels_last
    return torch.channels_last if on else torch.contiguous_format


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, keys.tolist(), pos, has_gauss, gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@torch.no_grad()
def predict(model: torch.nn.Module, loader: DataLoader, normalize: ImageNormalizer, device: torch.device,
            amp: bool, memory_format=torch.contiguous_format) -> tuple[np.ndarray, float]:
    """(probabilities [N, C] in loader order, summed cross-entropy)."""
    model.eval()
    probs, loss_sum = [], 0.0
    for x, y in loader:
        x = normalize(x.to(device, non_blocking=True)).contiguous(memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=amp):
            logits = model(x).float()
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        probs.append(logits.softmax(1).cpu().numpy())
    return np.concatenate(probs).astype(np.float64), loss_sum


@dataclass
class FoldResult:
    fold: int
    best_epoch: int
    best_score: float
    val_index: np.ndarray          # rows of train.csv in this fold's validation set
    oof: np.ndarray                # probabilities of the best checkpoint for those rows
    seconds: float


def write_oof(path: Path, table: Table, rows: np.ndarray, fold_of_row: np.ndarray, probs: np.ndarray,
              classes: list) -> None:
    """OOF schema: image_id,label,fold,prob_<class>... (one row per validation image, train.csv order)."""
    header = ["image_id", "label", "fold"] + [f"prob_{c}" for c in classes]
    write_csv(path, header, ([table.ids[r], table.labels[r], int(fold_of_row[r]), *(f"{p:.6g}" for p in prob)]
                             for r, prob in zip(rows, probs)))


# Settings that only decide where or how fast a run happens; anything else changes the trained weights.
RUNTIME_KEYS = {"device", "num_workers", "save_every_steps", "run_dir", "data_dir", "pretrained", "pretrained_file"}


def split_fingerprint(ids: list[str], val_rows: np.ndarray) -> str:
    return hashlib.sha1("\n".join(ids[r] for r in val_rows).encode()).hexdigest()


def read_oof_rows(paths: list[Path]) -> list[dict]:
    """The rows of OOF files written by write_oof, concatenated."""
    rows = []
    for path in paths:
        with open(path, newline="") as f:
            rows += list(csv.DictReader(f))
    return rows


def oof_arrays(rows: list[dict], classes: list) -> tuple[np.ndarray, np.ndarray]:
    """(class indices [N], probabilities [N, C]) of OOF rows."""
    index = {str(c): i for i, c in enumerate(classes)}
    y = np.array([index[r["label"]] for r in rows], dtype=np.int64)
    return y, np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows], dtype=np.float64)


def _check_resume_setup(saved: dict, base: dict, force: bool) -> None:
    """Resuming under other settings would silently produce a model that no single config describes."""
    old, new = saved["config"], base["config"]
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in new
               if k not in RUNTIME_KEYS and old.get(k) != new.get(k)]
    if saved.get("world_size", 1) != base["world_size"]:
        changed.append(f"processes: {saved.get('world_size', 1)} -> {base['world_size']} (the global batch)")
    if saved.get("split") != base["split"]:
        changed.append("the fold's validation images (folds file)")
    if saved["classes"] != base["classes"]:
        changed.append("the class list")
    if not changed:
        return
    if force:
        print(f"warning: resuming with changed settings ({'; '.join(changed)}) because --force-resume was given")
        return
    raise KitError(f"cannot resume fold {base['fold']}: {'; '.join(changed)}. Resume with the original "
                   f"settings, pass --force-resume to continue anyway, or drop --resume to retrain the fold")


def train_fold(cfg: Config, table: Table, fold_of_row: np.ndarray, fold: int, classes: list, run_dir: Path,
               targets: np.ndarray, resume: bool = False, force_resume: bool = False) -> FoldResult:
    d = distributed.current()
    fold_dir = run_dir / f"fold{fold}"
    with contextlib.ExitStack() as stack:
        error = None
        if d.main:                                  # one lock per fold, held by the process that writes
            fold_dir.mkdir(parents=True, exist_ok=True)
            try:
                stack.enter_context(FoldLock(fold_dir / ".lock"))
            except KitError as e:
                error = str(e)
        distributed.agree(error)
        return _train_fold(cfg, table, fold_of_row, fold, classes, fold_dir, targets, resume, force_resume, d)


def _validate(model, loader, normalize, device, amp, d: distributed.Dist, n: int,
              memory_format=torch.contiguous_format) -> tuple[np.ndarray, float]:
    """Probabilities for all n validation rows (every rank holds them all) and the mean loss."""
    probs, loss_sum = predict(model, loader, normalize, device, amp, memory_format)
    shares = distributed.gather((probs, loss_sum))
    full = np.empty((n, probs.shape[1]), dtype=np.float64)
    for rank, (p, _) in enumerate(shares):
        full[rank::d.world] = p
    return full, sum(loss for _, loss in shares) / n


def _train_fold(cfg, table, fold_of_row, fold, classes, fold_dir, targets, resume, force_resume,
                d: distributed.Dist) -> FoldResult:
    t0 = time.time()
    log = print if d.main else (lambda *a, **k: None)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and d.active:
        device = torch.device("cuda", d.local_rank)
    use_amp = cfg.amp and device.type == "cuda"
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        # deterministic mode also fills every new tensor with NaN, a debugging aid that costs an extra write
        # pass: eca_nfnet_l0 forward+backward on the CPU took 703 instead of 675 ms (33k vs 22k page faults)
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(cfg.seed + fold)              # the same initial weights on every rank
    random.seed(cfg.seed + fold)
    np.random.seed(cfg.seed + fold)

    train_rows = np.flatnonzero(fold_of_row != fold)
    val_rows = np.flatnonzero(fold_of_row == fold)
    batch_size = max(1, min(cfg.batch_size, len(train_rows) // d.world))    # per process
    train_set = ImageDataset(table.paths, targets, cfg.img_size, train_transform(cfg))
    val_set = ImageDataset(table.paths, targets, cfg.img_size)
    train_sampler = EpochSampler(train_rows, cfg.seed + fold, True, batch_size, d.rank, d.world)
    loader_args = dict(num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                       worker_init_fn=_worker_init, persistent_workers=cfg.num_workers > 0,
                       generator=torch.Generator().manual_seed(cfg.seed))   # keeps the global RNG untouched
    train_loader = DataLoader(train_set, batch_size=batch_size, sampler=train_sampler, **loader_args)
    val_loader = DataLoader(val_set, batch_size=batch_size * 2,
                            sampler=EpochSampler(val_rows, 0, False, rank=d.rank, world=d.world), **loader_args)
    for loader in (train_loader, val_loader):
        _start_workers(loader)

    memory_format = activation_layout(cfg, device)
    model = create_model(cfg.model, len(classes), cfg.pretrained, cfg.pretrained_file, cfg.drop_rate,
                         cfg.drop_path_rate).to(device, memory_format=memory_format)
    if d.active:
        torch.manual_seed(cfg.seed + fold + 7919 * d.rank)      # independent dropout per rank
    mean, std = normalization(model, cfg.mean, cfg.std)
    normalize = ImageNormalizer(mean, std).to(device)
    body_params, _ = split_head_params(model)
    # under torchrun, DDP averages gradients during backward, so AGC below sees the same gradients on every rank
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if d.active else model

    batches_per_epoch = train_sampler.global_batches
    updates_per_epoch = math.ceil(batches_per_epoch / cfg.accum_steps)
    total_updates = updates_per_epoch * cfg.epochs
    # fused: one kernel for the whole update instead of several passes per tensor; on the CPU it measured
    # 3x faster for SGD (10 vs 32 ms a step on eca_nfnet_l0) with bit-identical weights
    optimizer = create_optimizer_v2(model, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                    momentum=cfg.momentum, fused=True)
    scheduler = CosineLRScheduler(optimizer, t_initial=total_updates, lr_min=cfg.min_lr,
                                  warmup_t=int(cfg.warmup_epochs * updates_per_epoch),
                                  warmup_lr_init=cfg.lr * 0.01, warmup_prefix=True, t_in_epochs=False)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema else None
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    epoch, step_in_epoch, updates = 0, 0, 0
    best_score, best_epoch, history = None, -1, []
    base = {"config": cfg.to_dict(), "classes": classes, "fold": fold, "metric": cfg.metric, "mean": mean,
            "std": std, "kit_version": __version__, "split": split_fingerprint(table.ids, val_rows),
            "world_size": d.world}
    last_path, best_path = fold_dir / "last.pt", fold_dir / "best.pt"
    if resume and last_path.exists():
        state = checkpoint.load(last_path)
        _check_resume_setup(state, base, force_resume)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
        epoch, step_in_epoch, updates = state["epoch"], state["step_in_epoch"], state["updates"]
        best_score, best_epoch, history = state["best_score"], state["best_epoch"], state["history"]
        _set_rng_state(state["rng"][d.rank % len(state["rng"])])
        if epoch < cfg.epochs:
            log(f"fold {fold}: resuming at epoch {epoch + 1}, batch {step_in_epoch} ({updates} optimizer steps done)")
        else:
            log(f"fold {fold}: already trained ({epoch}/{cfg.epochs} epochs); nothing to resume")
    elif resume:
        log(f"fold {fold}: no checkpoint to resume from in {fold_dir}; starting the fold")
    scheduler.step_update(updates)

    def save_last():
        rng = distributed.gather(_rng_state())       # every rank's dropout stream, for an exact resume
        if d.main:
            checkpoint.save({**base, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scaler": scaler.state_dict(), "ema": ema.module.state_dict() if ema else None,
                             "epoch": epoch, "step_in_epoch": step_in_epoch, "updates": updates,
                             "best_score": best_score, "best_epoch": best_epoch, "history": history,
                             "rng": rng}, last_path)

    tb = _tensorboard(fold_dir) if cfg.tensorboard and d.main else None
    log(f"fold {fold}: {len(train_rows)} train / {len(val_rows)} val images, {cfg.model} @ {cfg.img_size}px, "
        f"device {device}{' (AMP)' if use_amp else ''}, batch {batch_size}x{cfg.accum_steps}"
        f"{f' on each of {d.world} processes' if d.active else ''}, AGC {'off' if cfg.agc_clip == 0 else cfg.agc_clip}")
    while epoch < cfg.epochs:
        e0 = time.time()
        net.train()
        train_sampler.set_epoch(epoch, start_batch=step_in_epoch)
        loss_sum = torch.zeros((), device=device)
        seen = 0
        bar = tqdm(train_loader, total=batches_per_epoch - step_in_epoch, disable=None if d.main else True,
                   leave=False, desc=f"fold {fold} epoch {epoch + 1}/{cfg.epochs}")
        for x, y in bar:
            x = normalize(x.to(device, non_blocking=True)).contiguous(memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            step_in_epoch += 1
            optimizer_step = step_in_epoch % cfg.accum_steps == 0 or step_in_epoch == batches_per_epoch
            with net.no_sync() if d.active and not optimizer_step else contextlib.nullcontext():
                with torch.autocast(device.type, enabled=use_amp):
                    loss = loss_fn(net(x), y)
                finite = loss.detach().clone()
                if d.active:
                    torch.distributed.all_reduce(finite)    # a NaN on any rank stops every rank
                if not torch.isfinite(finite):
                    raise KitError(f"fold {fold}: the loss became {finite.item()} at epoch {epoch + 1}, batch "
                                   f"{step_in_epoch}; training stopped, {last_path} keeps the last good state. "
                                   f"Lower --lr or --agc-clip, or check the images")
                scaler.scale(loss / cfg.accum_steps).backward()
            loss_sum += loss.detach()
            seen += 1
            if optimizer_step:
                scaler.unscale_(optimizer)            # AGC compares true gradients with weights, never scaled ones
                adaptive_clip_grad_(body_params, cfg.agc_clip, cfg.agc_eps)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                updates += 1
                scheduler.step_update(updates)
                if ema is not None:
                    ema.update(model, step=updates)
                if cfg.save_every_steps and updates % cfg.save_every_steps == 0 and step_in_epoch < batches_per_epoch:
                    save_last()
            if bar.total and seen % 10 == 0:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}")
        bar.close()
        losses = distributed.gather((loss_sum.item(), seen))
        train_loss = sum(l for l, _ in losses) / max(sum(n for _, n in losses), 1)
        train_rate = sum(n for _, n in losses) * batch_size / (time.time() - e0)

        eval_model = ema.module if ema is not None else model
        probs, val_loss = _validate(eval_model, val_loader, normalize, device, use_amp, d, len(val_rows),
                                    memory_format)
        val_score = score(cfg.metric, targets[val_rows], probs)
        improved = is_better(cfg.metric, val_score, best_score)
        epoch += 1
        step_in_epoch = 0
        if improved:
            best_score, best_epoch = val_score, epoch
            if d.main:
                checkpoint.save({**base, "model": eval_model.state_dict(), "epoch": epoch, "score": val_score},
                                best_path)
                write_oof(fold_dir / "oof.csv", table, val_rows, fold_of_row, probs, classes)
        history.append([epoch, f"{optimizer.param_groups[0]['lr']:.6g}", f"{train_loss:.6f}", f"{val_loss:.6f}",
                        cfg.metric, f"{val_score:.6f}", int(improved), f"{time.time() - e0:.1f}", f"{train_rate:.1f}"])
        if d.main:
            write_csv(fold_dir / "metrics.csv", METRICS_HEADER, history)
        if tb is not None:
            for name, value in (("loss/train", train_loss), ("loss/val", val_loss), (f"val/{cfg.metric}", val_score),
                                ("lr", optimizer.param_groups[0]["lr"]), ("train_images_per_s", train_rate)):
                tb.add_scalar(name, value, epoch)
            tb.flush()
        save_last()
        log(f"fold {fold} epoch {epoch}/{cfg.epochs}: train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
            f"{cfg.metric} {val_score:.4f}{' *' if improved else ''} ({time.time() - e0:.1f}s)", flush=True)

    distributed.barrier()                           # rank 0's files are complete before anyone reads them
    best = checkpoint.load(best_path)
    oof = oof_arrays(read_oof_rows([fold_dir / "oof.csv"]), classes)[1]
    log(f"fold {fold}: best {cfg.metric} {best['score']:.4f} at epoch {best['epoch']} -> {best_path}")
    return FoldResult(fold, best["epoch"], best["score"], val_rows, oof, time.time() - t0)
