"""Dataset validation: counts, sizes, modes, unreadable files, duplicates and leakage.

A report, not an exception: the CLI exits non-zero when ``report.ok`` is false (missing or empty
split folder, a split below ``data.min_train`` / ``data.min_test``). Duplicates are found by the
sha256 of the file bytes; the same bytes in a train and a test split is train/test leakage.
Preprocess reuses :func:`check_file` and :func:`build_report` so every image is decoded once.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cyclegan.config import DataConfig
from cyclegan.data.errors import DataError
from cyclegan.data.io import (
    Pixels,
    UnreadableImage,
    is_image_name,
    list_files,
    load_image_info,
    scan_files,
)
from cyclegan.data.layout import (
    GT_SPLITS,
    REQUIRED_SPLITS,
    nested_layouts,
    split_problem,
    subfolder_hint,
)
from cyclegan.storage import atomic_write_bytes, sha256_file

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
    ignored: list[dict[str, str]]  # entries that are not files: folders, links, FIFOs
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
            "ignored": self.ignored,
            "duplicates_within": self.duplicates_within,
            "duplicates_across": self.duplicates_across,
            "imbalance": self.imbalance,
            "errors": self.errors,
            "warnings": self.warnings,
        }

    def write_json(self, path: str | Path) -> Path:
        """Write atomically; a folder or unwritable path is a :class:`DataError` naming it."""
        path = Path(path)
        if path.is_dir():
            raise DataError(
                f"cannot write the JSON report to {path}: it is a folder; give a file path "
                f"such as {path / 'report.json'}"
            )
        if path.parent.exists() and not path.parent.is_dir():
            raise DataError(
                f"cannot write the JSON report to {path}: {path.parent} is a file, not a "
                "folder; choose another path for --json"
            )
        if path.exists() and not os.access(path, os.W_OK):
            raise DataError(
                f"cannot write the JSON report to {path}: the file is read-only; make it "
                "writable or choose another path for --json"
            )
        data = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        try:
            atomic_write_bytes(path, data.encode())
        except OSError as e:
            raise DataError(
                f"cannot write the JSON report to {path}: {e.strerror or e}; choose a "
                "writable path for --json"
            ) from e
        return path

    def summary(self) -> str:
        lines = [f"dataset {self.root}: {'OK' if self.ok else 'BROKEN'}"]
        for split, n in self.counts.items():
            sizes = ", ".join(f"{k} x{v}" for k, v in list(self.sizes[split].items())[:3])
            lines.append(f"  {split:9s} {n:6d} usable  sizes: {sizes or '-'}")
        for s in self.skipped:
            lines.append(f"  skipped {s['path']}: {s['reason']}")
        for s in self.ignored:
            lines.append(f"  ignored {s['path']}: {s['reason']}")
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


def _nested_error(root: Path) -> str | None:
    """No split folder at ``root`` but a full layout one level down: say where it is."""
    if any((root / s).is_dir() for s in REQUIRED_SPLITS):
        return None
    below = [d for d, _ in nested_layouts(root, 1)]
    if not below:
        return None
    return (
        f"no split folders in {root}, but {below[0]} holds {'/ '.join(REQUIRED_SPLITS)}/: "
        f"the dataset is nested one level too deep; point to {below[0]} instead "
        "(the folder given to `data validate`, or data.raw_dir)"
    )


def _layout_errors(root: Path, counts: dict[str, int], cfg: DataConfig) -> list[str]:
    nested = _nested_error(root)
    if nested:
        return [nested]
    errors = []
    for split in REQUIRED_SPLITS:
        minimum, key = (
            (cfg.min_train, "data.min_train")
            if split.startswith("train")
            else (cfg.min_test, "data.min_test")
        )
        problem = split_problem(root, split)
        if problem is not None and problem.startswith("missing"):
            errors.append(f"missing split folder {split}/ (expected {root / split})")
        elif problem is not None:
            errors.append(f"missing split folder {split}/: {problem}")
        elif counts[split] == 0:
            hint = subfolder_hint(root / split)
            errors.append(f"{split}/ has no usable images" + (f"; {hint}" if hint else ""))
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
        ignored=ignored_entries(root),
        duplicates_within=within,
        duplicates_across=across,
        imbalance=ratios,
        errors=_layout_errors(root, counts, cfg),
        warnings=warnings,
        checks=checks,
    )


def ignored_entries(root: Path) -> list[dict[str, str]]:
    """Entries of the split folders that are not read (folders, links, FIFOs), with reasons."""
    return [
        {"path": f"{split}/{i.path.name}", "reason": i.reason}
        for split in present_splits(root)
        if (root / split).is_dir()
        for i in scan_files(root / split)[1]
    ]


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
    if root.is_file():
        raise DataError(
            f"{root} is a file, not a dataset folder: give the folder holding "
            f"{'/ '.join(REQUIRED_SPLITS)}/ (to check an archive, import it first: "
            f"cyclegan data import {root} OUT)"
        )
    if not root.is_dir():
        raise DataError(
            f"dataset folder not found: {root} (expected {'/ '.join(REQUIRED_SPLITS)}/)"
        )
    checks = [
        check_file(root, split, f, cfg, (channels or {}).get(split, 3))[0]
        for split, f in tqdm(split_files(root), desc="validate", unit="file", disable=not progress)
    ]
    return build_report(root, checks, cfg)
