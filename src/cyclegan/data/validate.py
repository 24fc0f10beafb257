"""Dataset validation: counts, sizes, modes, unreadable files, duplicates and leakage.

A report, not an exception: the CLI exits non-zero when ``report.ok`` is false (missing or empty
split folder, a split below ``data.min_train`` / ``data.min_test``). Duplicates are found by the
sha256 of the file bytes; the same bytes in a train and a test split is train/test leakage.
Preprocess reuses :func:`check_file` and :func:`build_report` so every image is decoded once.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cyclegan.config import DataConfig
from cyclegan.data.errors import DataError
from cyclegan.data.io import Pixels, UnreadableImage, is_image_name, list_files, load_image_info
from cyclegan.storage import sha256_file

REQUIRED_SPLITS = ("trainA", "trainB", "testA", "testB")
GT_SPLITS = ("testA_gt", "testB_gt")
IMBALANCE_WARN = 2.0  # larger/smaller domain size ratio that earns a warning


@dataclass(frozen=True)
class FileCheck:
    """One file's verdict; ``reason`` is None for a usable image."""

    split: str
    name: str
    sha256: str
    reason: str | None = None
    width: int = 0
    height: int = 0
    mode: str = ""

    @property
    def rel(self) -> str:
        return f"{self.split}/{self.name}"


@dataclass
class ValidationReport:
    root: str
    counts: dict[str, int]
    sizes: dict[str, dict[str, int]]
    modes: dict[str, dict[str, int]]
    skipped: list[dict[str, str]]
    duplicates_within: list[list[str]]
    duplicates_across: list[list[str]]
    imbalance: dict[str, float]
    errors: list[str]
    warnings: list[str]
    checks: list[FileCheck] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "ok": self.ok,
            "counts": self.counts,
            "sizes": self.sizes,
            "modes": self.modes,
            "skipped": self.skipped,
            "duplicates_within": self.duplicates_within,
            "duplicates_across": self.duplicates_across,
            "imbalance": self.imbalance,
            "errors": self.errors,
            "warnings": self.warnings,
        }

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    def summary(self) -> str:
        lines = [f"dataset {self.root}: {'OK' if self.ok else 'BROKEN'}"]
        for split, n in self.counts.items():
            sizes = ", ".join(f"{k} x{v}" for k, v in list(self.sizes[split].items())[:3])
            lines.append(f"  {split:9s} {n:6d} usable  sizes: {sizes or '-'}")
        for s in self.skipped:
            lines.append(f"  skipped {s['path']}: {s['reason']}")
        for group in self.duplicates_within:
            lines.append(f"  duplicate within split: {' = '.join(group)}")
        for a, b in self.duplicates_across:
            lines.append(f"  duplicate across splits: {a} = {b}")
        lines += [f"  warning: {w}" for w in self.warnings]
        lines += [f"  error: {e}" for e in self.errors]
        return "\n".join(lines)


def check_file(
    root: Path, split: str, path: Path, cfg: DataConfig, channels: int = 3
) -> tuple[FileCheck, Pixels | None]:
    """Hash and decode one file; the image is returned so callers need not decode it again.

    ``channels`` is the split's domain channel count (``data.channels.split_channels``).
    """
    digest = sha256_file(path)
    if not is_image_name(path):
        reason = f"unsupported file extension {path.suffix.lower() or '(none)'!r}"
        return FileCheck(split, path.name, digest, reason), None
    try:
        img, info = load_image_info(path, cfg.min_image_size, cfg.max_image_pixels, channels)
    except UnreadableImage as e:
        return FileCheck(split, path.name, digest, e.reason), None
    return FileCheck(split, path.name, digest, None, info.width, info.height, info.mode), img


def present_splits(root: Path) -> list[str]:
    """Required splits (present or not) plus ground-truth splits that exist."""
    return list(REQUIRED_SPLITS) + [s for s in GT_SPLITS if (root / s).is_dir()]


def _duplicates(good: list[FileCheck]) -> tuple[list[list[str]], list[list[str]]]:
    by_hash: dict[str, list[FileCheck]] = defaultdict(list)
    for c in good:
        by_hash[c.sha256].append(c)
    within: list[list[str]] = []
    across: list[list[str]] = []
    for group in by_hash.values():
        per_split: dict[str, list[str]] = defaultdict(list)
        for c in group:
            per_split[c.split].append(c.rel)
        within += [sorted(v) for v in per_split.values() if len(v) > 1]
        across += [
            sorted([a.rel, b.rel])
            for i, a in enumerate(group)
            for b in group[i + 1 :]
            if a.split != b.split
        ]
    return sorted(within), sorted(across)


def _layout_errors(root: Path, counts: dict[str, int], cfg: DataConfig) -> list[str]:
    errors = []
    for split in REQUIRED_SPLITS:
        minimum, key = (
            (cfg.min_train, "data.min_train")
            if split.startswith("train")
            else (cfg.min_test, "data.min_test")
        )
        if not (root / split).is_dir():
            errors.append(f"missing split folder {split}/ (expected {root / split})")
        elif counts[split] == 0:
            errors.append(f"{split}/ has no usable images")
        elif counts[split] < minimum:
            errors.append(
                f"{split}/ has {counts[split]} usable images, below the minimum {minimum} ({key})"
            )
    return errors


def _imbalance(counts: dict[str, int]) -> tuple[dict[str, float], list[str]]:
    ratios, warnings = {}, []
    for prefix in ("train", "test"):
        a, b = counts.get(f"{prefix}A", 0), counts.get(f"{prefix}B", 0)
        if min(a, b) == 0:
            continue
        ratios[prefix] = round(max(a, b) / min(a, b), 4)
        if ratios[prefix] > IMBALANCE_WARN:
            warnings.append(f"{prefix} domains are imbalanced: {a} A vs {b} B images")
    return ratios, warnings


def build_report(root: Path, checks: list[FileCheck], cfg: DataConfig) -> ValidationReport:
    """Aggregate per-file checks into the report (pure: no file access except layout checks)."""
    splits = present_splits(root)
    good = [c for c in checks if c.reason is None]
    counts = {s: sum(c.split == s for c in good) for s in splits}
    sizes = {
        s: dict(Counter(f"{c.width}x{c.height}" for c in good if c.split == s)) for s in splits
    }
    modes = {s: dict(Counter(c.mode for c in good if c.split == s)) for s in splits}
    skipped = [{"path": c.rel, "reason": c.reason} for c in checks if c.reason is not None]
    within, across = _duplicates(good)
    ratios, warnings = _imbalance(counts)
    if across:
        warnings.append(f"{len(across)} identical file pairs across splits (train/test leakage?)")
    if within:
        warnings.append(f"{len(within)} groups of identical files within a split")
    return ValidationReport(
        root=str(root),
        counts=counts,
        sizes={
            s: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))) for s, v in sizes.items()
        },
        modes={s: dict(sorted(v.items())) for s, v in modes.items()},
        skipped=skipped,
        duplicates_within=within,
        duplicates_across=across,
        imbalance=ratios,
        errors=_layout_errors(root, counts, cfg),
        warnings=warnings,
        checks=checks,
    )


def split_files(root: Path) -> list[tuple[str, Path]]:
    """``(split, file)`` for every visible file in every present split folder."""
    return [
        (split, f)
        for split in present_splits(root)
        if (root / split).is_dir()
        for f in list_files(root / split)
    ]


def validate_dataset(
    root: str | Path,
    cfg: DataConfig | None = None,
    progress: bool = True,
    channels: dict[str, int] | None = None,
) -> ValidationReport:
    """Check every file under ``root``'s split folders; raises only when ``root`` is missing.

    ``channels`` maps split names to channel counts (default 3: RGB everywhere).
    """
    root, cfg = Path(root), cfg or DataConfig()
    if not root.is_dir():
        raise DataError(
            f"dataset folder not found: {root} (expected {'/ '.join(REQUIRED_SPLITS)}/)"
        )
    checks = [
        check_file(root, split, f, cfg, (channels or {}).get(split, 3))[0]
        for split, f in tqdm(split_files(root), desc="validate", unit="file", disable=not progress)
    ]
    return build_report(root, checks, cfg)
