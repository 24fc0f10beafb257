"""Training data streams: one loader per domain, augmentation seeded by stream position.

Seeding each sample's augmentation from (seed, domain, stream position) makes a run's data
independent of the number of ranks and data-loader workers, and makes resume exact.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from cyclegan.config import Config
from cyclegan.data.errors import DataError
from cyclegan.data.io import UnreadableImage, list_images, load_image
from cyclegan.data.trainset import PREPROCESS_HINT
from cyclegan.data.transforms import eval_transform, train_transform
from cyclegan.training.distributed import DistInfo, DistributedStreamSampler, sample_seed

log = logging.getLogger("cyclegan.train")


class SeededDomainDataset(Dataset[Tensor]):
    """Images of one domain; ``ds[(position, index)]`` augments with a position-derived seed."""

    def __init__(
        self,
        folder: Path,
        transform: Callable,
        seed: int,
        domain: str,
        min_size: int = 1,
        max_pixels: int | None = None,
        paths: list[Path] | None = None,
    ) -> None:
        self.paths = list_images(folder) if paths is None else paths
        if not self.paths:
            raise DataError(f"no images in {folder}: {PREPROCESS_HINT}")
        self.transform, self.seed, self.domain = transform, seed, domain
        self.min_size, self.max_pixels = min_size, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, int]) -> Tensor:
        position, index = item
        img = load_image(self.paths[index], self.min_size, self.max_pixels)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.domain, position))
            return self.transform(img)


def domain_loader(
    cfg: Config,
    info: DistInfo,
    split: str,
    domain: str,
    start_step: int,
    paths: list[Path] | None = None,
) -> Iterator[Tensor]:
    """An endless iterator of this rank's batches for ``split`` + ``domain`` (``trainA``...);
    ``paths`` (from ``check_train_data``) replaces listing the folder."""
    root = Path(cfg.data.processed_dir)
    ds = SeededDomainDataset(
        root / f"{split}{domain}",
        train_transform(cfg.transforms),
        seed=cfg.seed,
        domain=domain,
        min_size=cfg.data.min_image_size,
        max_pixels=cfg.data.max_image_pixels,
        paths=paths,
    )
    sampler = DistributedStreamSampler(
        len(ds),
        seed=cfg.seed * 2 + (0 if domain == "A" else 1),
        rank=info.rank,
        world_size=info.world_size,
        batch_size=cfg.train.batch_size,
        start_step=start_step,
    )
    loader = DataLoader(
        ds,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        num_workers=cfg.train.num_workers,
        pin_memory=info.device.type == "cuda",
        persistent_workers=cfg.train.num_workers > 0,
    )
    return iter(loader)


def fixed_samples(cfg: Config, domain: str, count: int = 4) -> Tensor | None:
    """The first ``count`` test images of a domain (eval transform) for sample grids."""
    folder = Path(cfg.data.processed_dir) / f"test{domain}"
    tf = eval_transform(cfg.transforms.crop_size)
    images = []
    for p in list_images(folder) if folder.is_dir() else []:
        try:
            images.append(tf(load_image(p, 1, cfg.data.max_image_pixels)))
        except UnreadableImage as e:
            log.warning("sample grid: skipping %s", e)
        if len(images) == count:
            break
    return torch.stack(images) if images else None
