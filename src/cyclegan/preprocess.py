"""The ``preprocess`` step: raw dataset -> validated, square, RGB PNG dataset + manifest.

Output (``cfg.data.processed_dir``): the same split folders (``*_gt`` included), one PNG per
usable source image under the source's stem, ``manifest.json`` (sha256 of every output and of its
source) and ``validation.json`` (the raw data's report, listing skipped files). The output is a
pure function of the input bytes and ``preprocess.size`` - no timestamps, no absolute paths - so
DVC caches it, and it is staged then renamed, so a killed run leaves nothing half-written.

Channels come from the model: domain A has ``model.input_nc``, B ``model.output_nc`` (one
source of truth, so data and networks cannot disagree). RGB domains are written exactly as
before; grey ones as 8-bit grey PNGs, other counts as ``H×W×C`` uint8 TIFFs, and the manifest
then records ``channels`` per domain.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from cyclegan.config import Config
from cyclegan.data.channels import (
    describe,
    domain_channels,
    file_suffix,
    split_channels,
    tiff_bytes,
)
from cyclegan.data.errors import DataError
from cyclegan.data.io import Pixels, is_image_name, resize_pixels, staged_dir
from cyclegan.data.validate import (
    FileCheck,
    ValidationReport,
    build_report,
    check_file,
    present_splits,
    split_files,
)

MANIFEST_VERSION = 1


@dataclass
class PreprocessResult:
    out_dir: Path
    size: int
    counts: dict[str, int]
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    channels: dict[str, int] = field(default_factory=lambda: {"A": 3, "B": 3})

    @property
    def manifest(self) -> Path:
        return self.out_dir / "manifest.json"

    @property
    def validation(self) -> Path:
        return self.out_dir / "validation.json"

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        a, b = self.channels["A"], self.channels["B"]
        what = "RGB PNG" if a == b == 3 else f"A {describe(a)}, B {describe(b)}"
        lines = [f"preprocessed -> {self.out_dir} ({self.size}x{self.size} {what}): {counts}"]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} files (see {self.validation}):")
            lines += [f"    {s['path']}: {s['reason']}" for s in self.skipped[:20]]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def output_names(names: list[str], suffix: str = ".png") -> dict[str, str]:
    """Source file name -> ``<stem>.png`` (or ``suffix``), unique even when sources differ only
    by extension.

    Colliding stems (compared case-insensitively, for macOS/Windows checkouts) become
    ``<stem>_<ext>.png``; any remaining clash gets a numeric suffix. Depends only on the names.
    """
    stems = [Path(n).stem for n in names]
    clashes = {s.casefold() for s in stems if sum(t.casefold() == s.casefold() for t in stems) > 1}
    used: set[str] = set()
    out: dict[str, str] = {}
    for name, stem in sorted(zip(names, stems, strict=True)):
        base = f"{stem}_{Path(name).suffix.lstrip('.')}" if stem.casefold() in clashes else stem
        candidate, k = f"{base}{suffix}", 1
        while candidate.casefold() in used:
            candidate, k = f"{base}_{k}{suffix}", k + 1
        used.add(candidate.casefold())
        out[name] = candidate
    return out


def _encoded(img: Pixels, size: int) -> bytes:
    """PNG for Pillow images (RGB / grey), TIFF for N-channel arrays; bicubic to ``size``."""
    if isinstance(img, Image.Image):
        return _png_bytes(img, size)
    return tiff_bytes(resize_pixels(img, (size, size)))


def _png_bytes(img: Image.Image, size: int) -> bytes:
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _fail_message(raw: Path, report: ValidationReport) -> str:
    detail = "; ".join(report.errors)
    skipped = f" {len(report.skipped)} files were skipped as unusable" if report.skipped else ""
    return (
        f"preprocess: {raw} is not a usable dataset: {detail}.{skipped} "
        f"Run `cyclegan data validate {raw}` for the full report and fix or replace the data."
    )


def _process(raw: Path, stage: Path, cfg: Config) -> tuple[list[FileCheck], dict[str, dict]]:
    """Decode each file once: check it, and write the resized PNG when usable."""
    files = split_files(raw)
    channels = split_channels(cfg.model)
    names: dict[str, dict[str, str]] = {}
    for split in present_splits(raw):
        if (raw / split).is_dir():
            (stage / split).mkdir()
            names[split] = output_names(
                [f.name for s, f in files if s == split and is_image_name(f)],
                file_suffix(channels[split]),
            )
    checks: list[FileCheck] = []
    entries: dict[str, dict] = {}
    for split, path in tqdm(files, desc="preprocess", unit="img"):
        check, img = check_file(raw, split, path, cfg.data, channels[split])
        checks.append(check)
        if img is None:
            continue
        rel = f"{split}/{names[split][path.name]}"
        data = _encoded(img, cfg.preprocess.size)
        (stage / rel).write_bytes(data)
        entries[rel] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "source": check.rel,
            "source_sha256": check.sha256,
        }
    return checks, entries


def preprocess(cfg: Config) -> PreprocessResult:
    """``cfg.data.raw_dir`` -> ``cfg.data.processed_dir``; ``DataError`` on an unusable dataset."""
    raw, out = Path(cfg.data.raw_dir), Path(cfg.data.processed_dir)
    if raw.is_file():
        raise DataError(
            f"preprocess: data.raw_dir {raw} is a file, not a folder; point data.raw_dir at "
            "the dataset folder (import an archive first: cyclegan data import ARCHIVE OUT)"
        )
    if not raw.is_dir():
        raise DataError(
            f"preprocess: raw data folder {raw} not found (data.raw_dir); run "
            "`cyclegan data fetch` (or `dvc repro data`) first"
        )
    with staged_dir(out, overwrite=True) as stage:
        checks, entries = _process(raw, stage, cfg)
        report = build_report(Path(cfg.data.raw_dir), checks, cfg.data)
        if not report.ok:
            raise DataError(_fail_message(raw, report))
        counts = {s: n for s, n in report.counts.items() if (raw / s).is_dir()}
        nc = domain_channels(cfg.model)
        manifest = {
            "version": MANIFEST_VERSION,
            "size": cfg.preprocess.size,
            "format": "PNG RGB",
            "counts": counts,
            "skipped": len(report.skipped),
            "files": dict(sorted(entries.items())),
        }
        if nc != {"A": 3, "B": 3}:  # RGB manifests stay byte-identical (DVC caches)
            manifest["channels"] = nc
            manifest["format"] = "PNG RGB (3), PNG grey (1), TIFF HxWxC uint8 (other counts)"
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        report.write_json(stage / "validation.json")
    return PreprocessResult(
        out,
        cfg.preprocess.size,
        counts,
        report.skipped,
        report.warnings,
        domain_channels(cfg.model),
    )
