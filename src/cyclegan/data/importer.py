"""Import a CycleGAN-layout dataset from a folder, archive, ``s3://`` prefix, URL or official name.

Archives usually wrap the layout in one top-level folder (``horse2zebra/trainA/...``); the
layout is searched for inside. Only the canonical split folders are written, staged in a hidden
sibling of ``OUT`` and renamed at the end, so a failed import leaves nothing half-written.
Archive members that would land outside the extraction folder (``..``, absolute paths, links,
devices) make the whole import fail before anything is extracted.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cyclegan.data.errors import DataError
from cyclegan.data.io import is_image_name, list_files, staged_dir
from cyclegan.storage import (
    StorageError,
    download_s3_file,
    download_url,
    list_s3_prefix,
    parse_s3_uri,
)

REQUIRED_SPLITS = ("trainA", "trainB", "testA", "testB")
OPTIONAL_SPLITS = ("testA_gt", "testB_gt")
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
_MAX_LAYOUT_DEPTH = 4


@dataclass
class ImportResult:
    source: str
    out: Path
    counts: dict[str, int]
    ignored: list[str] = field(default_factory=list)  # non-image files left out

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        extra = f"; {len(self.ignored)} non-image files left out" if self.ignored else ""
        return f"imported {self.source} -> {self.out}: {counts}{extra}"


def resolve_source(src: str) -> str:
    """An official CycleGAN dataset name -> its public URL; anything else unchanged."""
    return OFFICIAL_URL.format(name=src) if src in OFFICIAL_DATASETS else src


def is_archive(path: str | Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _unsafe_member(name: str) -> str | None:
    """Why an archive member name would escape the extraction folder, or None when safe."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "path traversal"
    return None


def _refuse(archive: Path, name: str, why: str) -> DataError:
    return DataError(
        f"{archive}: archive entry {name!r} escapes the output folder ({why}); refusing to "
        "import it. Re-pack the archive with plain relative paths."
    )


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for m in members:
            why = _unsafe_member(m.filename)
            if why is None and stat.S_ISLNK(m.external_attr >> 16):
                why = "symbolic link"
            if why:
                raise _refuse(archive, m.filename, why)
        for m in members:
            target = dest / m.filename
            if m.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        for m in members:
            why = _unsafe_member(m.name)
            if why is None and (m.issym() or m.islnk()):
                why = "symbolic link" if m.issym() else "hard link"
            if why is None and not (m.isfile() or m.isdir()):
                why = "special file"
            if why:
                raise _refuse(archive, m.name, why)
        for m in members:
            target = dest / m.name
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(m)
            if src is None:  # pragma: no cover - regular files always have data
                continue
            with src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def extract_archive(archive: Path, dest: Path) -> Path:
    """Safe extraction of a .zip or tar archive into ``dest`` (checked before writing)."""
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, dest)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, dest)
        else:
            raise DataError(f"{archive}: not a .zip or tar archive (cannot open it)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise DataError(f"{archive}: corrupt or truncated archive: {e}") from e
    return dest


def _fetch_s3(uri: str, dest: Path) -> Path:
    """One archive object, or every object under a prefix (keys kept as relative paths)."""
    bucket, key = parse_s3_uri(uri)
    if is_archive(key):
        return download_s3_file(uri, dest / PurePosixPath(key).name)
    keys = [k for k in list_s3_prefix(uri) if not k.endswith("/")]
    if not keys:
        raise DataError(f"no objects under {uri}; check the bucket and prefix")
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    root = dest / "s3"
    for k in keys:
        rel = k[len(prefix) :]
        why = _unsafe_member(rel)
        if why:
            raise DataError(f"s3://{bucket}/{k}: key escapes the output folder ({why})")
        download_s3_file(f"s3://{bucket}/{k}", root / rel)
    return root


def _materialise(src: str, work: Path) -> Path:
    """Turn any source into a local folder (downloading and extracting into ``work``)."""
    url = resolve_source(src)
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
    if local.is_file():
        return extract_archive(local, work / "extracted")
    return local


def find_layout(root: Path) -> Path:
    """The one folder under ``root`` holding trainA/ trainB/ testA/ testB/."""
    found: list[Path] = []
    partial: list[str] = []
    frontier = [root]
    for _ in range(_MAX_LAYOUT_DEPTH):
        nxt: list[Path] = []
        for d in frontier:
            subs = sorted(p for p in d.iterdir() if p.is_dir() and p.name != "__MACOSX")
            names = {p.name for p in subs}
            if set(REQUIRED_SPLITS) <= names:
                found.append(d)
            else:
                if names & set(REQUIRED_SPLITS):
                    missing = [s for s in REQUIRED_SPLITS if s not in names]
                    partial.append(f"{d} lacks {', '.join(missing)}")
                nxt.extend(subs)
        frontier = nxt
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise DataError(
            f"{root}: several CycleGAN layouts found ({', '.join(map(str, found))}); "
            "import one of them"
        )
    hint = f" ({'; '.join(partial)})" if partial else ""
    raise DataError(
        f"{root}: no CycleGAN layout found: expected a folder with "
        f"{'/ '.join(REQUIRED_SPLITS)}/{hint}"
    )


def _copy_layout(layout: Path, stage: Path) -> tuple[dict[str, int], list[str]]:
    counts: dict[str, int] = {}
    ignored: list[str] = []
    for split in REQUIRED_SPLITS + OPTIONAL_SPLITS:
        if not (layout / split).is_dir():
            continue
        (stage / split).mkdir()
        counts[split] = 0
        for f in list_files(layout / split):
            if not is_image_name(f):
                ignored.append(f"{split}/{f.name}")
                continue
            shutil.copyfile(f, stage / split / f.name)
            counts[split] += 1
    return counts, ignored


def import_dataset(src: str | Path, out: str | Path, overwrite: bool = False) -> ImportResult:
    """Import ``src`` into ``out`` as ``trainA trainB testA testB [testA_gt testB_gt]``."""
    src, out = str(src), Path(out)
    with staged_dir(out, overwrite) as stage:
        work = Path(tempfile.mkdtemp(prefix=".import-work-", dir=stage.parent))
        try:
            layout = find_layout(_materialise(src, work))
            counts, ignored = _copy_layout(layout, stage)
        except StorageError as e:
            raise DataError(f"cannot fetch dataset {src!r}: {e}") from e
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return ImportResult(source=src, out=out, counts=counts, ignored=ignored)
