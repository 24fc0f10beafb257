"""Builders for test datasets: clean layouts and a 'messy' one with every kind of bad file.

``make_messy_dataset`` returns what a correct validator must report, written down by hand here
(not computed by the code under test).
"""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = ("trainA", "trainB", "testA", "testB")


def noise(seed: int, size: tuple[int, int] = (32, 32)) -> Image.Image:
    """A unique RGB image per seed (so no two planted images are accidentally identical)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` but has no pixel data (a decompression-bomb probe)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def make_layout(
    root: Path, counts: dict[str, int] | None = None, size: int = 32, seed: int = 0
) -> Path:
    """A clean dataset: ``counts`` PNGs per split (default 3 each), all distinct."""
    counts = counts or {s: 3 for s in SPLITS}
    for k, (split, n) in enumerate(counts.items()):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            noise(seed * 100_000 + k * 1000 + i, (size, size)).save(root / split / f"{i:03d}.png")
    return root


def exif_rotated_jpeg(path: Path) -> None:
    """48x32 stored pixels (left half red, right blue) with EXIF Orientation=6 (rotate 90 CW)."""
    arr = np.zeros((32, 48, 3), np.uint8)
    arr[:, :24] = (255, 0, 0)
    arr[:, 24:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(path, quality=95, exif=exif.tobytes())


def palette_png(path: Path) -> None:
    """P mode: left half transparent (index 0), right half green (index 1)."""
    im = Image.new("P", (32, 32), 0)
    im.putpalette([0, 0, 0, 0, 200, 0] + [0] * (256 * 3 - 6))
    im.paste(1, (16, 0, 32, 32))
    im.save(path, transparency=0)


def rgba_png(path: Path) -> None:
    """Top half fully transparent red, bottom half opaque blue."""
    arr = np.zeros((32, 32, 4), np.uint8)
    arr[:16] = (255, 0, 0, 0)
    arr[16:] = (0, 0, 255, 255)
    Image.fromarray(arr, "RGBA").save(path)


def sixteen_bit_png(path: Path) -> None:
    """Mode I;16: columns 0-15 at 65535, 16-31 at 32896 (= 128 * 257)."""
    arr = np.full((32, 32), 65535, np.uint16)
    arr[:, 16:] = 32896
    Image.fromarray(arr).save(path)


def make_messy_dataset(root: Path) -> dict:
    """Plant good images of every mode and every kind of bad file; return the expected report."""
    for s in SPLITS:
        (root / s).mkdir(parents=True)
    a, b = root / "trainA", root / "trainB"
    noise(1).save(a / "good 1.png")
    noise(2).save(a / "#hash.jpg", quality=90)
    noise(3).save(a / "ünïcødé 日本.png")
    noise(4).save(a / "a#b c.png")
    palette_png(a / "palette.png")
    rgba_png(a / "rgba.png")
    Image.new("L", (32, 32), 100).save(a / "gray.png")
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(a / "cmyk.jpg")
    sixteen_bit_png(a / "sixteen.png")
    exif_rotated_jpeg(a / "exif.jpg")
    # bad files in trainA
    (a / "corrupt.jpg").write_bytes(np.random.default_rng(9).bytes(2000))
    noise(5, (64, 64)).save(a / "truncated.jpg", quality=90)
    data = (a / "truncated.jpg").read_bytes()
    (a / "truncated.jpg").write_bytes(data[: len(data) * 6 // 10])
    (a / "empty.png").write_bytes(b"")
    (a / "text.png").write_text("this is not an image\n")
    noise(6, (8, 8)).save(a / "tiny.png")
    (a / "notes.txt").write_text("a stray file\n")
    (a / ".DS_Store").write_bytes(b"\0\0")  # hidden: not part of the dataset at all
    # trainB: duplicates within the split, and a same-stem pair
    for i in range(4):
        noise(10 + i).save(b / f"b{i}.png")
    shutil.copyfile(b / "b0.png", b / "b0 copy.png")
    noise(20).save(b / "same.png")
    noise(21).save(b / "same.jpg", quality=90)
    (b / "bomb.png").write_bytes(png_header_only(20000, 20000))
    # test splits, with leakage from train
    noise(30).save(root / "testA" / "t0.png")
    shutil.copyfile(a / "good 1.png", root / "testA" / "leak.png")
    noise(31).save(root / "testB" / "t1.png")
    shutil.copyfile(b / "b1.png", root / "testB" / "leakB.png")
    good_a = [
        "#hash.jpg",
        "a#b c.png",
        "cmyk.jpg",
        "exif.jpg",
        "good 1.png",
        "gray.png",
        "palette.png",
        "rgba.png",
        "sixteen.png",
        "ünïcødé 日本.png",
    ]
    return {
        "counts": {"trainA": 10, "trainB": 7, "testA": 2, "testB": 2},
        "good": {
            "trainA": good_a,
            "trainB": [
                "b0 copy.png",
                "b0.png",
                "b1.png",
                "b2.png",
                "b3.png",
                "same.jpg",
                "same.png",
            ],
            "testA": ["leak.png", "t0.png"],
            "testB": ["leakB.png", "t1.png"],
        },
        "skipped": {
            "trainA/corrupt.jpg": r"not an image \(Pillow cannot identify the file\)",
            "trainA/empty.png": r"empty file \(0 bytes\)",
            "trainA/notes.txt": r"unsupported file extension '\.txt'",
            "trainA/text.png": r"not an image \(Pillow cannot identify the file\)",
            "trainA/tiny.png": r"too small: 8x8 px \(minimum 16 px per side, "
            r"data\.min_image_size\)",
            "trainA/truncated.jpg": r"corrupt image data: image file is truncated \(\d+ bytes not "
            r"processed\)",
            "trainB/bomb.png": r"decompression bomb guard: 400000000 pixels exceeds the limit of "
            r"89478485 \(data\.max_image_pixels\)",
        },
        "duplicates_within": [["trainB/b0 copy.png", "trainB/b0.png"]],
        "duplicates_across": [
            ["testA/leak.png", "trainA/good 1.png"],
            ["testB/leakB.png", "trainB/b1.png"],
        ],
    }
