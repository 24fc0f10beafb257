"""Safe unpacking of .zip and tar archives: everything is checked before anything is written.

Refused up front, each with a message naming the archive as the user gave it (path or URL, never
a temporary file): entries escaping the output folder (``..``, absolute paths, links, devices),
encrypted entries and compression methods Python cannot read (deflate64), a path that is both a
file and a folder, an empty archive, and archive bombs (``data.max_expansion_ratio``,
``data.max_extract_bytes``). A file that is no archive is described: a cut-off zip, an HTML page.
"""

from __future__ import annotations

import errno
import lzma
import math
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from cyclegan.config import DataConfig
from cyclegan.data.errors import DataError

_RATIO_FLOOR = 1 << 20  # archives unpacking to less than this cannot hurt, whatever the ratio
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_ZIP_METHOD_NAMES = {6: "implode", 9: "deflate64", 93: "zstandard", 95: "xz", 98: "PPMd", 99: "AES"}


def unsafe_member(name: str) -> str | None:
    """Why an archive member name would escape the extraction folder, or None when safe."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "path traversal"
    return None


def _refuse(label: str, name: str, why: str) -> DataError:
    return DataError(
        f"{label}: archive entry {name!r} escapes the output folder ({why}); refusing to "
        "import it. Re-pack the archive with plain relative paths."
    )


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def file_folder_clash(entries: list[tuple[str, bool]]) -> str | None:
    """The first path that is both a file and a folder (``a`` and ``a/b.png``), if any."""
    files: set[str] = set()
    dirs: set[str] = set()
    for name, is_dir in entries:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        (dirs if is_dir else files).add("/".join(parts))
    return min(files & dirs, default=None)


def _check_entries(
    label: str, entries: list[tuple[str, bool, int]], archive_size: int, cfg: DataConfig
) -> int:
    """Refuse empty archives, file/folder clashes and bombs before writing anything.

    ``entries`` are ``(name, is_dir, unpacked_size)``; returns the total unpacked size."""
    if not entries:
        raise DataError(
            f"{label}: the archive is empty (no entries); nothing to import. Check that it is "
            "the right file and re-pack the dataset folder into it."
        )
    clash = file_folder_clash([(name, is_dir) for name, is_dir, _ in entries])
    if clash:
        raise DataError(
            f"{label}: archive entry {clash!r} is both a file and a folder, so the archive "
            "cannot be unpacked faithfully; re-pack it so that each path is one or the other."
        )
    total = sum(size for _, is_dir, size in entries if not is_dir)
    if total > cfg.max_extract_bytes:
        raise DataError(
            f"{label}: the archive unpacks to {_size(total)}, above the limit of "
            f"{_size(cfg.max_extract_bytes)} (data.max_extract_bytes). If you trust it and have "
            f"the disk space, raise the limit in params.yaml or with "
            f"--set data.max_extract_bytes={total}"
        )
    ratio = total / max(archive_size, 1)
    if total > _RATIO_FLOOR and ratio > cfg.max_expansion_ratio:
        raise DataError(
            f"{label}: the archive unpacks to {_size(total)} from {_size(archive_size)} "
            f"(ratio {ratio:.0f}:1), above the limit of {cfg.max_expansion_ratio:g}:1 "
            "(data.max_expansion_ratio); a decompression bomb? If you trust it, raise the limit "
            f"in params.yaml or with --set data.max_expansion_ratio={math.ceil(ratio)}"
        )
    return total


def _copy_limited(src: BinaryIO, dst: BinaryIO, budget: int, label: str, name: str) -> int:
    """Copy at most ``budget`` bytes: a header that under-states its size cannot bomb us."""
    written = 0
    while block := src.read(1 << 20):
        written += len(block)
        if written > budget:
            raise DataError(
                f"{label}: archive entry {name!r} unpacks to more bytes than the archive "
                "declares; refusing a corrupt or malicious archive"
            )
        dst.write(block)
    return written


def _zip_problem(m: zipfile.ZipInfo) -> str | None:
    """Why Python cannot unpack this zip entry (encryption, compression method), or None."""
    if m.flag_bits & 0x1:
        return (
            "is password-protected (encrypted); unpack it with its password and import the "
            "folder, or re-pack it without a password"
        )
    if m.compress_type not in _ZIP_METHODS:
        method = _ZIP_METHOD_NAMES.get(m.compress_type, f"method {m.compress_type}")
        return (
            f"uses the compression method {method}, which cannot be read here; re-pack it with "
            "standard deflate (e.g. `zip -r`) or as .tar.gz"
        )
    return None


def _unpack(
    archive: Path,
    dest: Path,
    label: str,
    cfg: DataConfig,
    entries: list[tuple[str, bool, int]],
    open_entry: Callable[[int], IO[bytes] | None],
) -> None:
    """Check ``(name, is_dir, size)`` entries as a whole, then write them under ``dest``."""
    budget = _check_entries(label, entries, archive.stat().st_size, cfg)
    for i, (name, is_dir, _) in enumerate(entries):
        target = dest / name
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        src = open_entry(i)
        if src is None:  # pragma: no cover - regular files always have data
            continue
        with src, open(target, "wb") as dst:
            budget -= _copy_limited(src, dst, budget, label, name)


def _extract_zip(archive: Path, dest: Path, label: str, cfg: DataConfig) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for m in members:
            why = unsafe_member(m.filename)
            if why is None and stat.S_ISLNK(m.external_attr >> 16):
                why = "symbolic link"
            if why:
                raise _refuse(label, m.filename, why)
            problem = _zip_problem(m)
            if problem:
                raise DataError(f"{label}: archive entry {m.filename!r} {problem}")
        entries = [(m.filename, m.is_dir(), m.file_size) for m in members]
        _unpack(archive, dest, label, cfg, entries, lambda i: zf.open(members[i]))


def _extract_tar(archive: Path, dest: Path, label: str, cfg: DataConfig) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        for m in members:
            why = unsafe_member(m.name)
            if why is None and (m.issym() or m.islnk()):
                why = "symbolic link" if m.issym() else "hard link"
            if why is None and not (m.isfile() or m.isdir()):
                why = "special file"
            if why:
                raise _refuse(label, m.name, why)
        entries = [(m.name, m.isdir(), m.size) for m in members]
        _unpack(archive, dest, label, cfg, entries, lambda i: tf.extractfile(members[i]))


def _not_archive(path: Path, label: str) -> DataError:
    """Say what the file looks like instead: a cut-off zip, an HTML page, or something else."""
    with open(path, "rb") as f:
        head = f.read(1024)
    text = head.lstrip().lower()
    if head.startswith(b"PK"):
        return DataError(
            f"{label}: corrupt or truncated .zip archive (its end-of-archive directory is "
            "missing, as after an interrupted download or copy); download or copy it again"
        )
    if text.startswith((b"<!doctype html", b"<html", b"<head")) or b"<html" in text:
        return DataError(
            f"{label}: got an HTML page, not an archive (an error, login or download page?); "
            "check that the URL points to the .zip or .tar.gz file itself"
        )
    if not head:
        return DataError(f"{label}: empty file (0 bytes), not an archive; download it again")
    return DataError(
        f"{label}: not a .zip or tar archive (cannot open it); give a dataset folder, a .zip, "
        "a .tar or a .tar.gz"
    )


def extract_archive(
    archive: Path, dest: Path, label: str | None = None, cfg: DataConfig | None = None
) -> Path:
    """Safe extraction of a .zip or tar archive into ``dest`` (checked before writing).

    ``label`` names the archive in messages (the URL or path the user gave, not a temp file)."""
    label, cfg = label or str(archive), cfg or DataConfig()
    try:
        if zipfile.is_zipfile(archive):
            dest.mkdir(parents=True, exist_ok=True)
            _extract_zip(archive, dest, label, cfg)
        elif tarfile.is_tarfile(archive):
            dest.mkdir(parents=True, exist_ok=True)
            _extract_tar(archive, dest, label, cfg)
        else:
            raise _not_archive(archive, label)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as e:
        raise DataError(
            f"{label}: corrupt or truncated archive: {e}; download or copy it again"
        ) from e
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DataError(f"{label}: no space left while unpacking into {dest.parent}") from e
        raise DataError(f"{label}: cannot unpack the archive: {e}") from e
    return dest
