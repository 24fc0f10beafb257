"""Unpaired A/B datasets over the CycleGAN layout (``trainA/ trainB/ testA/ testB/``).

B is drawn independently of A, as in the reference implementation. The draw is a pure function
of ``(seed, epoch, index)`` rather than a stateful RNG, so it is identical whatever the number of
DataLoader workers (each holds a copy of the dataset) and exact resume only needs
``state_dict()`` (seed and epoch) plus the sampler position the trainer already tracks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from cyclegan.data.errors import DataError
from cyclegan.data.io import UnreadableImage, list_images, load_image
from cyclegan.data.transforms import Transform, to_tensor

_MASK64 = (1 << 64) - 1


def _mix(*values: int) -> int:
    """SplitMix64 over the values: a fast, platform-independent 64-bit hash."""
    z = 0x9E3779B97F4A7C15
    for v in values:
        z = (z + (v & _MASK64) + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
    return z


def scan_images(
    folder: Path, min_size: int, max_pixels: int | None
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Split a folder's images into usable ones and ``(path, reason)`` for the rest."""
    good: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in list_images(folder):
        try:
            load_image(path, min_size, max_pixels)
        except UnreadableImage as e:
            skipped.append((path, e.reason))
        else:
            good.append(path)
    return good, skipped


def _domain_files(
    folder: Path, min_images: int, scan: bool, min_size: int, max_pixels: int | None
) -> tuple[list[Path], list[tuple[Path, str]]]:
    if scan:
        files, skipped = scan_images(folder, min_size, max_pixels)
    else:
        files, skipped = list_images(folder), []
    if len(files) < max(min_images, 1):
        raise DataError(
            f"{folder}: {len(files)} usable images, need at least {max(min_images, 1)} "
            f"({len(skipped)} skipped; run `cyclegan data validate` on the dataset for details)"
        )
    return files, skipped


class UnpairedDataset(Dataset):
    """``{"A", "B", "A_path", "B_path"}`` items; A in order, B random (train) or in order (test).

    ``scan=True`` decodes every file once up front so corrupt ones are skipped (listed in
    ``self.skipped``) rather than crashing mid-run. A ``generator`` may replace ``seed``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Transform | None = None,
        min_images: int = 1,
        *,
        seed: int = 0,
        generator: torch.Generator | None = None,
        random_b: bool | None = None,
        scan: bool = True,
        min_size: int = 1,
        max_pixels: int | None = None,
    ) -> None:
        if split not in ("train", "test"):
            raise DataError(f"split must be 'train' or 'test', got {split!r}")
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"dataset root not found: {root} (expected {split}A/ and {split}B/)")
        self.root, self.split = root, split
        self.transform = transform or to_tensor
        check = (min_images, scan, min_size, max_pixels)
        self.A, skipped_a = _domain_files(root / f"{split}A", *check)
        self.B, skipped_b = _domain_files(root / f"{split}B", *check)
        self.skipped = skipped_a + skipped_b
        self.min_size, self.max_pixels = min_size, max_pixels
        if generator is not None:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        self.seed = int(seed)
        self.epoch = 0
        self.random_b = split == "train" if random_b is None else random_b

    def __len__(self) -> int:
        return max(len(self.A), len(self.B))

    def set_epoch(self, epoch: int) -> None:
        """New B partners for every A each epoch (indices past ``len`` also advance it)."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])

    def b_index(self, index: int) -> int:
        """Which B file pairs with sample ``index`` (pure function of seed, epoch, index)."""
        if not self.random_b:
            return index % len(self.B)
        return _mix(self.seed, self.epoch, index) % len(self.B)

    def _load(self, path: Path) -> torch.Tensor:
        return self.transform(load_image(path, self.min_size, self.max_pixels))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            raise IndexError(f"negative index {index}")
        a_path = self.A[index % len(self.A)]
        b_path = self.B[self.b_index(index)]
        return {
            "A": self._load(a_path),
            "B": self._load(b_path),
            "A_path": str(a_path),
            "B_path": str(b_path),
        }


class SingleDomainDataset(Dataset):
    """``{"image", "path"}`` for every usable image in one folder (translation, evaluation)."""

    def __init__(
        self,
        folder: str | Path,
        transform: Transform | None = None,
        *,
        min_images: int = 1,
        scan: bool = True,
        min_size: int = 1,
        max_pixels: int | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.transform = transform or to_tensor
        self.files, self.skipped = _domain_files(
            self.folder, min_images, scan, min_size, max_pixels
        )
        self.min_size, self.max_pixels = min_size, max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        image = load_image(path, self.min_size, self.max_pixels)
        return {"image": self.transform(image), "path": str(path)}
