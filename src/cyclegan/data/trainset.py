"""Training data found and checked before any run starts (no torch: the CLI calls it first).

A folder ``cyclegan preprocess`` wrote (its ``manifest.json`` lists the files) is trusted; any
other folder is decoded image by image up front, and unreadable files are skipped and listed,
so a run never dies at step N on one bad file after minutes of set-up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cyclegan.config import Config
from cyclegan.data.channels import domain_channels
from cyclegan.data.errors import DataError
from cyclegan.data.io import UnreadableImage, list_images, load_image

PREPROCESS_HINT = (
    "run `cyclegan preprocess` (or `dvc repro preprocess`) first, or point data.processed_dir "
    "at a dataset with trainA/ trainB/"
)


@dataclass
class TrainData:
    """The training images that will be used, found and checked before any run starts."""

    root: Path
    paths: dict[str, list[Path]]  # "A" / "B" -> usable files of trainA / trainB
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason)
    checked: bool = False  # True when there was no manifest and every image was decoded

    def warnings(self) -> list[str]:
        if not self.skipped:
            return []
        listed = "; ".join(f"{p}: {why}" for p, why in self.skipped[:5])
        more = f" (+{len(self.skipped) - 5} more)" if len(self.skipped) > 5 else ""
        return [
            f"skipped {len(self.skipped)} unreadable training image(s) in {self.root} (not a "
            f"`cyclegan preprocess` output): {listed}{more}"
        ]


def _manifest_files(root: Path) -> set[str] | None:
    """Files ``cyclegan preprocess`` vouched for (``manifest.json``), or None without one."""
    try:
        files = json.loads((root / "manifest.json").read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    return set(files) if isinstance(files, dict) else None


def check_train_data(cfg: Config) -> TrainData:
    """Find trainA/trainB up front; a folder ``preprocess`` did not write is checked image by
    image (unreadable files are skipped and listed), so a run never dies at step N on one file.
    """
    root = Path(cfg.data.processed_dir)
    if not root.is_dir():
        raise DataError(f"training data {root} not found (data.processed_dir): {PREPROCESS_HINT}")
    manifest = _manifest_files(root)
    data = TrainData(root, {}, checked=False)
    channels = domain_channels(cfg.model)
    for domain in ("A", "B"):
        folder = root / f"train{domain}"
        if not folder.is_dir():
            raise DataError(f"{root} has no train{domain}/ folder: {PREPROCESS_HINT}")
        paths = list_images(folder)
        if manifest is not None and all(f"train{domain}/{p.name}" in manifest for p in paths):
            data.paths[domain] = paths
            continue
        data.checked = True
        good = []
        for p in paths:
            try:
                load_image(p, cfg.data.min_image_size, cfg.data.max_image_pixels, channels[domain])
                good.append(p)
            except UnreadableImage as e:
                data.skipped.append((p, e.reason))
        data.paths[domain] = good
    for domain, good in data.paths.items():
        if len(good) < max(1, cfg.data.min_train):
            bad = sum(p.parent.name == f"train{domain}" for p, _ in data.skipped)
            raise DataError(
                f"{root / f'train{domain}'}: {len(good)} usable image(s), data.min_train is "
                f"{cfg.data.min_train}"
                + (f" ({bad} unreadable)" if bad else "")
                + ": "
                + PREPROCESS_HINT
            )
    return data
