"""Reading images the way real datasets hand them to us: any mode, any orientation, any name.

Every unreadable file becomes an :class:`UnreadableImage` (a :class:`DataError`) carrying a short
``reason``, so callers can skip it and list it in a report instead of crashing a training run or
feeding garbage to a model. The decompression-bomb guard runs on the header, before any pixel
buffer is allocated.

Channels: a domain of 3 channels gets RGB Pillow images (any mode converted), of 1 channel an 8-bit
grey ("L") Pillow image, of any other count an ``H×W×C`` uint8 array read from a multispectral
TIFF (``tifffile``) or a ``.npy`` file. Data deeper than 8 bits is scaled by :func:`scale_to_uint8`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cyclegan.data.errors import DataError
from cyclegan.storage import staging_dir

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".png",
        ".bmp",
        ".gif",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pnm",
        ".npy",
    }
)
ARRAY_EXTENSIONS: frozenset[str] = frozenset({".npy", ".tif", ".tiff"})  # N-channel containers

Pixels = Image.Image | np.ndarray  # Pillow image (1 or 3 channels) or H×W×C uint8 array

_PIL_LIMIT_LOCK = threading.Lock()
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


class UnreadableImage(DataError):
    """One file cannot be used as an image; ``reason`` is the short text a report lists."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    """What the file was before conversion (reports show the original mode and format)."""

    width: int
    height: int
    mode: str
    format: str


def is_image_name(path: Path) -> bool:
    """An image extension and not a hidden/AppleDouble file (``.DS_Store``, ``._x.jpg``)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


@dataclass(frozen=True)
class Ignored:
    """An entry of an image folder that is not read, and why (reports list these)."""

    path: Path
    reason: str


def _entry_reason(p: Path, root: Path | None) -> str | None:
    """Why a visible folder entry is not a readable file (None: read it)."""
    try:
        st = p.lstat()
    except OSError as e:
        return f"cannot read entry: {e.strerror or e}"
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(p)
        if not p.exists():
            return f"broken symbolic link (-> {target})"
        real = p.resolve()
        if root is not None and not real.is_relative_to(root.resolve()):
            return f"symbolic link leaving the source folder (-> {real}); copy the file in instead"
        if real.is_dir():
            return (
                f"symbolic link to a folder (-> {target}); only files directly in a split are read"
            )
        st = real.stat()
    if stat.S_ISDIR(st.st_mode):
        named = " named like an image" if p.suffix.lower() in IMAGE_EXTENSIONS else ""
        return f"a folder{named}; only files directly in a split are read (sub-folders are not)"
    if stat.S_ISFIFO(st.st_mode):
        return "special file (FIFO), not a regular file"
    if stat.S_ISSOCK(st.st_mode):
        return "special file (socket), not a regular file"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "special file (device), not a regular file"
    return None


def scan_files(folder: str | Path, root: Path | None = None) -> tuple[list[Path], list[Ignored]]:
    """Visible regular files directly in ``folder`` (sorted), and every other visible entry with
    the reason it is not read. With ``root``, links resolving outside ``root`` are not followed."""
    folder = Path(folder)
    if folder.is_file():
        raise DataError(
            f"{folder} is a file, not a folder: expected a directory of images "
            "(pass the folder that holds the image files)"
        )
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder} (expected a directory of images)")
    files: list[Path] = []
    ignored: list[Ignored] = []
    for p in sorted(folder.iterdir(), key=lambda p: p.name):
        if p.name.startswith("."):
            continue  # hidden: .DS_Store, ._AppleDouble, our own marks
        reason = _entry_reason(p, root)
        if reason is None:
            files.append(p)
        else:
            ignored.append(Ignored(p, reason))
    return files, ignored


def list_files(folder: str | Path) -> list[Path]:
    """Every visible regular file directly in ``folder``, sorted by name."""
    return scan_files(folder)[0]


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (by extension), sorted by name for reproducibility."""
    return [p for p in list_files(folder) if is_image_name(p)]


@contextmanager
def _pillow_limit(max_pixels: int | None) -> Iterator[None]:
    """Turn Pillow's bomb warning into an error; raise its global cap only when ours is larger."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        current = Image.MAX_IMAGE_PIXELS
        if max_pixels is None or current is None or max_pixels <= current:
            yield
            return
        with _PIL_LIMIT_LOCK:
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                yield
            finally:
                Image.MAX_IMAGE_PIXELS = current


def _bomb_reason(pixels: int | str, limit: int | None) -> str:
    where = (
        f"the limit of {limit} (data.max_image_pixels)"
        if limit
        else f"Pillow's limit of {Image.MAX_IMAGE_PIXELS} (PIL.Image.MAX_IMAGE_PIXELS)"
    )
    return f"decompression bomb guard: {pixels} pixels exceeds {where}"


def _open_checked(path: Path, min_size: int, max_pixels: int | None) -> Image.Image:
    """Open lazily (header only) and apply the size guards before decoding pixels."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise UnreadableImage(path, f"cannot read file: {e.strerror or e}") from e
    if size == 0:
        raise UnreadableImage(path, "empty file (0 bytes)")
    try:
        with _pillow_limit(max_pixels):
            im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        m = _BOMB_PIXELS.search(str(e))
        pixels = m.group(1) if m else "too many"
        raise UnreadableImage(path, _bomb_reason(pixels, max_pixels)) from e
    except Image.UnidentifiedImageError as e:
        raise UnreadableImage(path, "not an image (Pillow cannot identify the file)") from e
    except Exception as e:  # any plugin error means "unusable file"
        raise UnreadableImage(path, f"corrupt image header: {e}") from e
    w, h = im.size
    if max_pixels is not None and w * h > max_pixels:
        im.close()
        raise UnreadableImage(path, _bomb_reason(w * h, max_pixels))
    if min(w, h) < min_size:
        im.close()
        raise UnreadableImage(
            path, f"too small: {w}x{h} px (minimum {min_size} px per side, data.min_image_size)"
        )
    return im


def _min_max(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.float64)
    return (arr - lo) * 255.0 / (hi - lo)


def scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Any numeric array -> uint8 by one documented rule (never silent clipping).

    uint8 is kept; bool becomes 0/255; uint16 is divided by 257 (its full range onto 0..255);
    other integers (int16, int32 = Pillow mode "I", uint32, int64) are kept when all values are
    in 0..255, divided by 257 when in 0..65535 (16-bit data in a wider container, as Pillow opens
    16-bit PNGs), else min-max scaled over the whole image; floats are multiplied by 255 when in
    [0, 1], kept when in [0, 255], else min-max scaled (NaN/inf become 0). Min-max uses one
    range for all channels of an image (band ratios survive); a constant image becomes 0.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype.kind not in "uif":
        raise ValueError(f"unsupported pixel type {arr.dtype}")
    x = arr.astype(np.float64)
    finite = np.isfinite(x)
    x = np.where(finite, x, 0.0)
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    is_float = arr.dtype.kind == "f"
    if arr.dtype == np.uint16:
        out = x / 257.0
    elif is_float and lo >= 0 and hi <= 1:
        out = x * 255.0
    elif lo >= 0 and hi <= 255:
        out = x
    elif not is_float and lo >= 0 and hi <= 65535:
        out = x / 257.0
    else:
        out = _min_max(x)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _high_bit_to_l(im: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey -> 8-bit L, scaling instead of Pillow's clipping."""
    return Image.fromarray(scale_to_uint8(np.asarray(im)), mode="L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparency is composited on white (what viewers show)."""
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode in ("F",) or im.mode.startswith("I"):
        im = _high_bit_to_l(im)
    return im if im.mode == "RGB" else im.convert("RGB")


def _oriented(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block is ignored (the pixels are still fine)."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # malformed EXIF from cameras/editors is common in the wild
        return im


def _pillow_image(
    path: Path, min_size: int, max_pixels: int | None, channels: int
) -> tuple[Image.Image, ImageInfo]:
    im = _open_checked(path, min_size, max_pixels)
    mode, fmt = im.mode, im.format or "unknown"
    try:
        with im:
            im.load()
            out = to_rgb(_oriented(im))
            if channels == 1:
                out = out.convert("L")  # luma 0.299R + 0.587G + 0.114B (grey stays exact)
            out.load()
    except MemoryError as e:
        raise UnreadableImage(path, "out of memory while decoding") from e
    except Exception as e:  # truncation surfaces as many types
        raise UnreadableImage(path, f"corrupt image data: {e}") from e
    return out, ImageInfo(out.width, out.height, mode, fmt)


def _array_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the file header (no pixel buffer yet: the bomb guard comes first)."""
    if path.suffix.lower() == ".npy":
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        return tuple(arr.shape), arr.dtype
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        return tuple(series.shape), np.dtype(series.dtype)


def _read_array(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False)
    import tifffile

    return tifffile.imread(path)


def _channels_last(shape: tuple[int, ...], channels: int) -> tuple[bool, int, int]:
    """(transpose from C×H×W?, H, W) for a 2-D or 3-D array of ``channels`` bands."""
    if len(shape) == 2 and channels == 1:
        return False, shape[0], shape[1]
    if len(shape) == 3 and shape[-1] == channels:
        return False, shape[0], shape[1]
    if len(shape) == 3 and shape[0] == channels:
        return True, shape[1], shape[2]
    raise ValueError(
        f"array of shape {shape} has no axis of {channels} channels "
        f"(expected H×W×{channels} or {channels}×H×W: the domain's model.input_nc/output_nc)"
    )


def _array_image(
    path: Path, min_size: int, max_pixels: int | None, channels: int
) -> tuple[Pixels, ImageInfo]:
    """A ``.npy`` or (multispectral) TIFF as H×W×C uint8 (Pillow L/RGB for 1/3 channels)."""
    try:
        if path.stat().st_size == 0:
            raise UnreadableImage(path, "empty file (0 bytes)")
        shape, dtype = _array_header(path)
        transpose, h, w = _channels_last(shape, channels)
    except UnreadableImage:
        raise
    except ValueError as e:
        raise UnreadableImage(path, str(e)) from e
    except Exception as e:  # tifffile / numpy header errors
        raise UnreadableImage(path, f"not a readable array file: {e}") from e
    if max_pixels is not None and h * w > max_pixels:
        raise UnreadableImage(path, _bomb_reason(h * w, max_pixels))
    if min(h, w) < min_size:
        raise UnreadableImage(
            path, f"too small: {w}x{h} px (minimum {min_size} px per side, data.min_image_size)"
        )
    try:
        arr = _read_array(path)
        arr = np.moveaxis(arr, 0, -1) if transpose else arr.reshape(h, w, -1)
        arr = np.ascontiguousarray(scale_to_uint8(arr))
    except MemoryError as e:
        raise UnreadableImage(path, "out of memory while decoding") from e
    except Exception as e:
        raise UnreadableImage(path, f"corrupt array data: {e}") from e
    info = ImageInfo(w, h, f"{dtype}x{channels}", "NPY" if path.suffix == ".npy" else "TIFF")
    if channels == 1:
        return Image.fromarray(arr[..., 0], mode="L"), info
    if channels == 3:
        return Image.fromarray(arr, mode="RGB"), info
    return arr, info


def load_image_info(
    path: str | Path, min_size: int = 1, max_pixels: int | None = None, channels: int = 3
) -> tuple[Pixels, ImageInfo]:
    """Decode fully (catching truncation), apply EXIF orientation, convert to ``channels``.

    3 -> RGB and 1 -> grey Pillow images from any Pillow-readable file (or ``.npy``); other
    counts -> H×W×C uint8 arrays from ``.tif``/``.tiff`` (tifffile) or ``.npy`` files.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy" or (channels not in (1, 3) and suffix in ARRAY_EXTENSIONS):
        return _array_image(path, min_size, max_pixels, channels)
    if channels not in (1, 3):
        raise UnreadableImage(
            path,
            f"a {channels}-channel domain needs .tif/.tiff or .npy files "
            f"(multispectral arrays), not {suffix or 'no extension'}",
        )
    try:
        return _pillow_image(path, min_size, max_pixels, channels)
    except UnreadableImage as e:
        # Pillow cannot open multi-band or 16-bit colour TIFFs: tifffile may (3 bands of uint16),
        # or at least say how many channels the file has
        if suffix in (".tif", ".tiff") and e.reason.startswith("not an image"):
            try:
                return _array_image(path, min_size, max_pixels, channels)
            except UnreadableImage as e2:
                if "channels" not in e2.reason:  # not a TIFF either: Pillow's reason stands
                    raise e from None
                raise
        raise


def load_image(
    path: str | Path, min_size: int = 1, max_pixels: int | None = None, channels: int = 3
) -> Pixels:
    """An RGB image (or grey / H×W×C array for other ``channels``), or :class:`UnreadableImage`."""
    return load_image_info(path, min_size, max_pixels, channels)[0]


def pixel_array(img: Pixels) -> np.ndarray:
    """H×W×C uint8 view of loaded pixels (Pillow L gets a channel axis of 1)."""
    arr = np.asarray(img)
    return arr[..., None] if arr.ndim == 2 else arr


def resize_pixels(img: Pixels, size: tuple[int, int]) -> Pixels:
    """Bicubic resize to ``(width, height)``; arrays band by band with Pillow's same filter."""
    if not isinstance(img, np.ndarray):
        return img if img.size == size else img.resize(size, Image.Resampling.BICUBIC)
    if img.shape[1::-1] == size:
        return img
    bands = [
        np.asarray(Image.fromarray(img[..., c], mode="L").resize(size, Image.Resampling.BICUBIC))
        for c in range(img.shape[-1])
    ]
    return np.stack(bands, axis=-1)


@contextmanager
def staged_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder in a hidden sibling, then swap it in: a killed run leaves ``out`` as it was.

    Refuses a non-empty ``out`` unless ``overwrite``. The staging folder is removed on any error.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder; choose another output path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(
            f"{out} already exists and is not empty; "
            "pass overwrite=True (--overwrite) to replace it"
        )
    created = _make_parents(out.parent)
    stage = staging_dir(out)  # also removes stale ones killed runs left
    stage.chmod(0o755)  # mkdtemp makes 0700; the published folder should read like any other
    published = False
    try:
        yield stage
        if not out.exists():
            os.replace(stage, out)
        else:
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / out.name)
            try:
                os.replace(stage, out)
            except OSError:
                os.replace(trash / out.name, out)
                raise
            finally:
                shutil.rmtree(trash, ignore_errors=True)
        published = True
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
        if not published:
            for d in reversed(created):  # a failed run leaves no empty parent folders behind
                with contextlib.suppress(OSError):
                    d.rmdir()


def _make_parents(folder: Path) -> list[Path]:
    """``mkdir -p folder``, returning the folders it created (outermost first)."""
    missing = [p for p in [folder, *folder.parents] if not p.exists()][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return missing
