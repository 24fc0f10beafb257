"""Test/train splits as tensors: every image resized to one square size, in ``[-1, 1]``.

Evaluation compares image ``i`` of two batches, so all images of a run share one size (the
training crop size by default). Unreadable files are skipped and listed, never fatal, so one bad
JPEG in a real test set costs one sample, not the whole evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from cyclegan.data.errors import DataError
from cyclegan.data.io import list_images, load_image
from cyclegan.data.transforms import eval_transform
from cyclegan.evaluation.errors import EvalError


@dataclass
class ImageSet:
    """A folder's images as one ``N×C×S×S`` batch, with names and the files skipped."""

    images: Tensor
    names: list[str]
    folder: Path
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)


def load_folder(folder: str | Path, size: int, max_images: int = 0, channels: int = 3) -> ImageSet:
    """Load the (first ``max_images``, sorted by name) images of ``folder`` at ``size``×``size``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvalError(f"image folder not found: {folder} (expected the dataset's split folders)")
    try:
        paths = list_images(folder)
    except DataError as e:
        raise EvalError(str(e)) from e
    if max_images > 0:
        paths = paths[:max_images]
    transform = eval_transform(size, channels)
    tensors, names, skipped = [], [], []
    for path in tqdm(paths, desc=f"load {folder.name}", leave=False, disable=len(paths) < 200):
        try:
            tensors.append(transform(load_image(path, channels=channels)))
            names.append(path.name)
        except DataError as e:
            skipped.append(f"{path}: {e}")
    if not tensors:
        raise EvalError(
            f"no usable images in {folder} ({len(skipped)} unreadable); expected image files "
            "such as .png/.jpg directly in the folder"
        )
    return ImageSet(torch.stack(tensors), names, folder, skipped)


def load_ground_truth(
    root: Path, split: str, source: ImageSet, size: int, channels: int = 3
) -> ImageSet | None:
    """``<root>/<split>_gt`` aligned by file name with ``source``; None when the folder is absent.

    A ground-truth folder that lacks some of the source's files is a broken dataset, not a
    smaller benchmark: it raises instead of silently scoring a subset.
    """
    folder = root / f"{split}_gt"
    if not folder.is_dir():
        return None
    transform = eval_transform(size, channels)
    missing = [n for n in source.names if not (folder / n).is_file()]
    if missing:
        raise EvalError(
            f"{folder} lacks {len(missing)} of {len(source)} {split} files (e.g. {missing[0]}); "
            "ground truth must have the same file names as the inputs: regenerate the dataset"
        )
    try:
        pixels = [load_image(folder / n, channels=channels) for n in source.names]
        images = torch.stack([transform(p) for p in pixels])
    except DataError as e:
        raise EvalError(f"ground truth unreadable: {e}") from e
    return ImageSet(images, list(source.names), folder)
