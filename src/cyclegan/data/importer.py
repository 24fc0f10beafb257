"""Import a CycleGAN-layout dataset from a folder, archive, ``s3://`` prefix, URL or official name.

Archives usually wrap the layout in one top-level folder (``horse2zebra/trainA/...``); the
layout is searched for inside. Only the canonical split folders are written, staged in a hidden
sibling of ``OUT`` and renamed at the end, so a failed import leaves nothing half-written.
Archives are unpacked by :mod:`cyclegan.data.archive`, which checks every entry first. From a
user's folder, links that leave it are never followed: they are skipped and listed, like every
other entry left out, each with its reason.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cyclegan.config import DataConfig
from cyclegan.data.archive import extract_archive, file_folder_clash, unsafe_member
from cyclegan.data.errors import DataError
from cyclegan.data.io import is_image_name, scan_files, staged_dir
from cyclegan.data.layout import (
    OPTIONAL_SPLITS,
    REQUIRED_SPLITS,
    leaves,
    nested_layouts,
    split_problem,
    subfolder_hint,
)
from cyclegan.storage import (
    StorageError,
    download_s3_file,
    download_url,
    list_s3_prefix,
    parse_s3_uri,
)

OFFICIAL_DATASETS = (
    "apple2orange",
    "summer2winter_yosemite",
    "horse2zebra",
    "monet2photo",
    "cezanne2photo",
    "ukiyoe2photo",
    "vangogh2photo",
    "maps",
    "cityscapes",
    "facades",
    "iphone2dslr_flower",
    "ae_photos",
)
OFFICIAL_URL = "https://efrosgans.eecs.berkeley.edu/cyclegan/datasets/{name}.zip"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_MAX_LAYOUT_DEPTH = 4  # the source folder and 3 levels below it
_DEEP_SEARCH = 12  # how far down a too-deep layout is still found, to say where it is
_LISTED = 20  # entries left out that a summary names


@dataclass
class ImportResult:
    source: str
    out: Path
    counts: dict[str, int]
    ignored: dict[str, str] = field(default_factory=dict)  # entries left out -> why

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        lines = [f"imported {self.source} -> {self.out}: {counts}"]
        if self.ignored:
            lines[0] += f"; {len(self.ignored)} entries left out:"
            lines += [f"  {k}: {v}" for k, v in list(self.ignored.items())[:_LISTED]]
            if len(self.ignored) > _LISTED:
                lines.append(f"  ... and {len(self.ignored) - _LISTED} more")
        return "\n".join(lines)


def resolve_source(src: str) -> str:
    """An official CycleGAN dataset name -> its public URL; anything else unchanged."""
    return OFFICIAL_URL.format(name=src) if src in OFFICIAL_DATASETS else src


def is_archive(path: str | Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _fetch_s3(uri: str, dest: Path) -> Path:
    """One archive object, or every object under a prefix (keys kept as relative paths)."""
    bucket, key = parse_s3_uri(uri)
    if is_archive(key):
        return download_s3_file(uri, dest / PurePosixPath(key).name)
    keys = [k for k in list_s3_prefix(uri) if not k.endswith("/")]
    if not keys:
        raise DataError(f"no objects under {uri}; check the bucket and prefix")
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    clash = file_folder_clash([(k[len(prefix) :], False) for k in keys])
    if clash:
        raise DataError(
            f"s3://{bucket}/{prefix}{clash} is both an object and a prefix (folder); move one of "
            "them so that the keys form a folder tree"
        )
    root = dest / "s3"
    for k in keys:
        rel = k[len(prefix) :]
        why = unsafe_member(rel)
        if why:
            raise DataError(f"s3://{bucket}/{k}: key escapes the output folder ({why})")
        download_s3_file(f"s3://{bucket}/{k}", root / rel)
    return root


def _source_label(src: str) -> str:
    url = resolve_source(src)
    return src if url == src else f"{src} ({url})"


def _materialise(src: str, work: Path, cfg: DataConfig) -> tuple[Path, Path | None]:
    """Turn any source into a local folder (downloading and extracting into ``work``).

    Returns the folder and, for a user's own folder, its resolved path: links leaving it are
    never followed."""
    url, label = resolve_source(src), _source_label(src)
    real_root: Path | None = None
    if url.startswith("s3://"):
        local = _fetch_s3(url, work)
    elif url.startswith(("http://", "https://")):
        name = PurePosixPath(url.split("?", 1)[0]).name or "download"
        local = download_url(url, work / name)
    else:
        local = Path(src).expanduser()
        if not local.exists():
            names = ", ".join(OFFICIAL_DATASETS)
            raise DataError(
                f"dataset source not found: {src!r} is not an existing folder or archive, an "
                f"s3:// URI, an http(s) URL or an official CycleGAN dataset name ({names})"
            )
        real_root = local.resolve()
    if local.is_file():
        return extract_archive(local, work / "extracted", label, cfg), None
    return local, real_root


def _layout_status(d: Path, root: Path | None) -> dict[str, str | None]:
    """Each required split's problem in ``d`` (None = fine)."""
    return {s: split_problem(d, s, root) for s in REQUIRED_SPLITS}


def _subdirs(d: Path, root: Path | None) -> list[Path]:
    return sorted(
        p for p in d.iterdir() if p.is_dir() and p.name != "__MACOSX" and not leaves(p, root)
    )


def find_layout(root: Path, label: str | None = None, real_root: Path | None = None) -> Path:
    """The one folder under ``root`` holding trainA/ trainB/ testA/ testB/.

    ``label`` names ``root`` in messages (the archive or URL, not a temp folder); with
    ``real_root``, links leaving it are not followed."""
    label = label or str(root)

    def where(d: Path) -> str:
        return label if d == root else f"{label}/{d.relative_to(root).as_posix()}"

    found: list[Path] = []
    partial: list[str] = []
    frontier = [root]
    for _ in range(_MAX_LAYOUT_DEPTH):
        nxt: list[Path] = []
        for d in frontier:
            status = _layout_status(d, real_root)
            problems = [p for p in status.values() if p is not None]
            if not problems:
                found.append(d)
                continue
            if len(problems) < len(status) or any(not p.startswith("missing") for p in problems):
                partial.append(f"{where(d)}: {'; '.join(problems)}")
            nxt.extend(_subdirs(d, real_root))
        frontier = nxt
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise DataError(
            f"{label}: several CycleGAN layouts found ({', '.join(map(where, found))}); "
            "import one of them"
        )
    levels = _MAX_LAYOUT_DEPTH - 1
    msg = (
        f"{label}: no CycleGAN layout found: expected a folder with "
        f"{'/ '.join(REQUIRED_SPLITS)}/ at most {levels} folder levels down"
    )
    if partial:
        raise DataError(f"{msg}. Found {' | '.join(partial)}")
    deep = [(d, n) for d, n in nested_layouts(root, _DEEP_SEARCH) if n > levels]
    if deep:
        d, n = deep[0]
        raise DataError(
            f"{msg}, but {where(d)} holds one {n} levels down, deeper than the search depth of "
            f"{levels}: import that folder directly (an archive: unpack it first, or re-pack "
            "it with the dataset folder nearer the top)"
        )
    images = sum(1 for f in root.iterdir() if f.is_file() and is_image_name(f))
    if images:
        raise DataError(
            f"{msg}; it holds {images} image files directly: sort them into trainA/ and trainB/ "
            "(training images of each domain) and testA/ and testB/ (held-out test images)"
        )
    raise DataError(msg)


def _copy_layout(
    layout: Path, stage: Path, label: str, real_root: Path | None
) -> tuple[dict[str, int], dict[str, str]]:
    counts: dict[str, int] = {}
    ignored: dict[str, str] = {}
    for split in REQUIRED_SPLITS + OPTIONAL_SPLITS:
        if split_problem(layout, split, real_root) is not None:
            continue
        (stage / split).mkdir()
        counts[split] = 0
        files, skipped = scan_files(layout / split, real_root)
        ignored.update({f"{split}/{i.path.name}": i.reason for i in skipped})
        for f in files:
            if not is_image_name(f):
                ignored[f"{split}/{f.name}"] = (
                    f"not an image file name (extension {f.suffix.lower() or '(none)'!r})"
                )
                continue
            shutil.copyfile(f, stage / split / f.name)
            counts[split] += 1
        if counts[split] == 0 and split in REQUIRED_SPLITS:
            hint = subfolder_hint(layout / split)
            raise DataError(
                f"{label}/{split}/ holds no image files; "
                + (hint or f"put the {split} images directly in it")
            )
    return counts, dict(sorted(ignored.items()))


def import_dataset(
    src: str | Path,
    out: str | Path,
    overwrite: bool = False,
    cfg: DataConfig | None = None,
    finish: Callable[[Path], None] | None = None,
) -> ImportResult:
    """Import ``src`` into ``out`` as ``trainA trainB testA testB [testA_gt testB_gt]``.

    ``cfg`` supplies the archive-bomb limits; ``finish`` may add files to the staged folder
    before it is published (``data fetch`` marks its output this way)."""
    src, out, cfg = str(src), Path(out), cfg or DataConfig()
    label = _source_label(src)
    with staged_dir(out, overwrite) as stage:
        work = Path(tempfile.mkdtemp(prefix=".import-work-", dir=stage.parent))
        try:
            local, real_root = _materialise(src, work, cfg)
            root_label = label if local.is_relative_to(work) else str(local)
            layout = find_layout(local, root_label, real_root)
            rel = layout.relative_to(local).as_posix()
            layout_label = root_label if rel == "." else f"{root_label}/{rel}"
            counts, ignored = _copy_layout(layout, stage, layout_label, real_root)
            if finish is not None:
                finish(stage)
        except StorageError as e:
            raise DataError(f"cannot fetch dataset {src!r}: {e}") from e
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return ImportResult(source=src, out=out, counts=counts, ignored=ignored)
