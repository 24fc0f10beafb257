"""Training data streams: one loader per domain, augmentation seeded by stream position.

Seeding each sample's augmentation from (seed, domain, stream position) makes a run's data
independent of the number of ranks and data-loader workers, and makes resume exact.

Progressive resizing (``train.progressive``): the stage, hence the load and crop size, is a pure
function of the step, and the step of a sample is its stream position divided by the global
batch; so every rank, worker and resumed run picks the same size for the same sample. A stage
of crop size ``s`` resizes to ``round(load_size * s / crop_size)`` then crops ``s``: the same
field of view as the final stage at a lower resolution.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from cyclegan.config import Config, ConfigError
from cyclegan.data.channels import domain_channels
from cyclegan.data.errors import DataError
from cyclegan.data.io import UnreadableImage, list_images, load_image
from cyclegan.data.trainset import PREPROCESS_HINT
from cyclegan.data.transforms import eval_transform, train_transform
from cyclegan.models import build_discriminator, generator_size_multiple
from cyclegan.training.distributed import DistInfo, DistributedStreamSampler, sample_seed

log = logging.getLogger("cyclegan.train")


@dataclass(frozen=True)
class Stage:
    """One progressive-resizing stage: from ``first_step`` on, resize to ``load`` and crop."""

    first_step: int
    load_size: int
    crop_size: int


def progressive_stages(cfg: Config) -> list[Stage]:
    """The stages of ``train.progressive`` (one stage for a fixed-size run); checks sizes."""
    t = cfg.transforms
    if not cfg.train.progressive:
        return [Stage(0, t.load_size, t.crop_size)]
    m = cfg.model
    multiple = generator_size_multiple(m)
    with torch.random.fork_rng(devices=[]):  # building initialises weights: keep RNGs as they are
        smallest = int(getattr(build_discriminator(m, m.input_nc), "min_size", 1))
    stages = []
    for i, (frac, size) in enumerate(cfg.train.progressive):
        if size % multiple:
            raise ConfigError(
                f"train.progressive[{i}][1]: must be a multiple of {multiple} (the "
                f"{m.generator} generator's size multiple), got {size}"
            )
        if size < smallest:
            raise ConfigError(
                f"train.progressive[{i}][1]: must be >= {smallest} px (the smallest input of "
                f"the {m.discriminator} discriminator with these settings), got {size}"
            )
        load = max(size, round(t.load_size * size / t.crop_size))
        stages.append(Stage(math.floor(frac * cfg.train.steps), load, size))
    return stages


def stage_at(stages: list[Stage], step: int) -> Stage:
    """The stage that trains step ``step`` (0-based)."""
    return [s for s in stages if s.first_step <= step][-1]


class StagedTransforms:
    """Stream position -> the transform of its step's stage (picklable for spawned workers)."""

    def __init__(self, stages: list[Stage], transforms: list[Callable], global_batch: int) -> None:
        self.stages, self.transforms, self.global_batch = stages, transforms, global_batch

    def __call__(self, position: int) -> Callable:
        stage = stage_at(self.stages, position // self.global_batch)
        return self.transforms[self.stages.index(stage)]


class SeededDomainDataset(Dataset[Tensor]):
    """Images of one domain; ``ds[(position, index)]`` augments with a position-derived seed.

    ``transform`` may instead be a function of the stream position returning the transform
    (progressive resizing).
    """

    def __init__(
        self,
        folder: Path,
        transform: Callable,
        seed: int,
        domain: str,
        min_size: int = 1,
        max_pixels: int | None = None,
        paths: list[Path] | None = None,
        channels: int = 3,
        transform_at: Callable[[int], Callable] | None = None,
    ) -> None:
        self.paths = list_images(folder) if paths is None else paths
        if not self.paths:
            raise DataError(f"no images in {folder}: {PREPROCESS_HINT}")
        self.transform, self.seed, self.domain = transform, seed, domain
        self.min_size, self.max_pixels, self.channels = min_size, max_pixels, channels
        self.transform_at = transform_at

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, int]) -> Tensor:
        position, index = item
        img = load_image(self.paths[index], self.min_size, self.max_pixels, self.channels)
        transform = self.transform_at(position) if self.transform_at else self.transform
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.domain, position))
            return transform(img)


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
    channels = domain_channels(cfg.model)[domain]
    stages = progressive_stages(cfg)
    tfs = [train_transform(cfg.transforms, channels, s.load_size, s.crop_size) for s in stages]
    transform_at = StagedTransforms(stages, tfs, cfg.train.batch_size * info.world_size)
    ds = SeededDomainDataset(
        root / f"{split}{domain}",
        tfs[-1],
        seed=cfg.seed,
        domain=domain,
        min_size=cfg.data.min_image_size,
        max_pixels=cfg.data.max_image_pixels,
        paths=paths,
        channels=channels,
        transform_at=transform_at if len(stages) > 1 else None,
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
    channels = domain_channels(cfg.model)[domain]
    tf = eval_transform(cfg.transforms.crop_size, channels)
    images = []
    for p in list_images(folder) if folder.is_dir() else []:
        try:
            images.append(tf(load_image(p, 1, cfg.data.max_image_pixels, channels)))
        except UnreadableImage as e:
            log.warning("sample grid: skipping %s", e)
        if len(images) == count:
            break
    return torch.stack(images) if images else None
