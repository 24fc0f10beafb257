"""Everything distributed lives here: process-group set-up, device choice, samplers, DDP wrap.

The same ``cyclegan train`` runs as one process or under ``torchrun --nproc_per_node N``
(multi-node too): torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` variables switch it on.
``gloo`` is used on CPU and ``nccl`` on GPU.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this rank's GPU when there is one, else CPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but no CUDA GPU is visible; use auto or cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(spec)


def setup(device_spec: str) -> DistInfo:
    """Join the process group when launched by torchrun; otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_spec, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=device)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def broadcast_flag(info: DistInfo, flag: bool) -> bool:
    """Rank 0's decision (e.g. 'stop: NaN') reaches every rank so all stop together."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_across_ranks(info: DistInfo, values: dict[str, float]) -> dict[str, float]:
    """Average scalar losses over ranks so the log shows the global-batch figure."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], device=info.device, dtype=torch.float64)
    dist.all_reduce(t)
    t /= info.world_size
    return dict(zip(keys, t.tolist(), strict=True))


def gather_to_main(info: DistInfo, obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` (CPU tensors / plain data) as a list on rank 0; None elsewhere."""
    if not info.distributed:
        return [obj]
    buf = io.BytesIO()
    torch.save(obj, buf)  # gather_object's own pickling of tensors breaks on torch 2.14
    out: list[Any] | None = [None] * info.world_size if info.is_main else None
    dist.gather_object(buf.getvalue(), out, dst=0)
    if out is None:
        return None
    return [torch.load(io.BytesIO(b), map_location="cpu", weights_only=True) for b in out]


def wrap(module: nn.Module, info: DistInfo) -> nn.Module:
    """DDP-wrap a module in a distributed run; the plain module otherwise."""
    if not info.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(module, device_ids=ids, forward_sync_buffers=False)


def sample_seed(seed: int, domain: str, position: int) -> int:
    """A stable 63-bit seed for one sample's augmentation, independent of rank and workers."""
    h = hashlib.blake2b(f"{seed}:{domain}:{position}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


class DistributedStreamSampler(Sampler[tuple[int, int]]):
    """One domain's sampler: an endless stream of shuffled epochs, split across ranks.

    Global stream position ``p`` maps to dataset index ``perm(epoch)[p % n]``. At step ``s``
    with per-rank batch ``b`` and ``W`` ranks, rank ``r`` takes positions
    ``s*W*b + r*b ... + b-1``, so the union over ranks equals what one process with batch
    ``W*b`` takes: DDP and single-process runs see the same images. Yields ``(position,
    index)``; the position seeds the augmentation, which makes resuming at any step exact
    (no epoch replay, no data-loader worker state to restore). Unlike torch's
    ``DistributedSampler`` it never pads or drops, and resumes mid-epoch.
    """

    def __init__(
        self, n: int, *, seed: int, rank: int, world_size: int, batch_size: int, start_step: int = 0
    ) -> None:
        if n < 1:
            raise ValueError("DistributedStreamSampler needs a non-empty dataset")
        self.n, self.seed, self.rank, self.world = n, seed, rank, world_size
        self.batch, self.start_step = batch_size, start_step

    def _perm(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        step = self.start_step
        cache: dict[int, torch.Tensor] = {}
        while True:
            base = step * self.world * self.batch + self.rank * self.batch
            for p in range(base, base + self.batch):
                epoch = p // self.n
                if epoch not in cache:
                    cache = {epoch: self._perm(epoch)}
                yield p, int(cache[epoch][p % self.n])
            step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "n": self.n, "world_size": self.world, "batch": self.batch}
