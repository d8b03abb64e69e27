"""torchrun support. Under `torchrun --nproc_per_node N train.py ...` every process trains one replica on its
share of each global batch (DistributedDataParallel); rank 0 alone writes files and prints. Launched plainly,
everything here reduces to a single process and costs nothing."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from kit.core.errors import KitError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init(device: str) -> Dist:
    """Join the torchrun process group when launched by torchrun (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if dist.is_initialized():
        return current()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, local_rank)


def current() -> Dist:
    if not dist.is_initialized():
        return Dist()
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def gather(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    d = current()
    if not d.active:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def agree(error: str | None) -> None:
    """Raise the same KitError on every rank when any rank hit one, so no rank waits forever on the others."""
    errors = [e for e in gather(error) if e]
    if errors:
        raise KitError(errors[0])
