"""cyclegan.data.io: every Pillow mode to RGB, and every kind of bad file to a clear reason."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cyclegan.data.errors import DataError
from cyclegan.data.io import (
    UnreadableImage,
    list_images,
    load_image,
    load_image_info,
    staged_dir,
)
from tests.data_factory import (
    exif_rotated_jpeg,
    noise,
    palette_png,
    png_header_only,
    rgba_png,
    sixteen_bit_png,
)


def _px(img: Image.Image, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(img)[y, x])


def test_list_images_sorted_filters_extensions_and_hidden(tmp_path: Path) -> None:
    for name in ["b.png", "a b#.JPG", "ü.jpeg", "notes.txt", ".hidden.png", "._x.jpg"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a b#.JPG", "b.png", "ü.jpeg"]


def test_list_images_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"image folder not found: .*nope \(expected a directory"):
        list_images(tmp_path / "nope")


def test_palette_with_transparency_composited_on_white(tmp_path: Path) -> None:
    palette_png(tmp_path / "p.png")
    img, info = load_image_info(tmp_path / "p.png")
    assert (img.mode, info.mode) == ("RGB", "P")
    assert _px(img, 0, 0) == (255, 255, 255)
    assert _px(img, 20, 5) == (0, 200, 0)


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    rgba_png(tmp_path / "r.png")
    img, info = load_image_info(tmp_path / "r.png")
    assert info.mode == "RGBA"
    assert _px(img, 3, 3) == (255, 255, 255)  # fully transparent red -> white
    assert _px(img, 3, 20) == (0, 0, 255)


def test_sixteen_bit_scaled_not_clipped(tmp_path: Path) -> None:
    sixteen_bit_png(tmp_path / "s.png")
    img, info = load_image_info(tmp_path / "s.png")
    assert info.mode.startswith("I")
    assert _px(img, 0, 0) == (255, 255, 255)
    assert _px(img, 20, 0) == (128, 128, 128)  # 32896 / 257 = 128; clipping would give 255


def test_cmyk_and_grayscale_to_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    Image.new("L", (32, 32), 100).save(tmp_path / "g.png")
    Image.new("1", (32, 32), 1).save(tmp_path / "bw.png")
    cmyk, info = load_image_info(tmp_path / "c.jpg")
    assert info.mode == "CMYK"
    assert np.abs(np.asarray(cmyk, np.int16) - (255, 0, 0)).max() <= 3  # JPEG is lossy
    assert _px(load_image(tmp_path / "g.png"), 5, 5) == (100, 100, 100)
    assert _px(load_image(tmp_path / "bw.png"), 5, 5) == (255, 255, 255)


def test_exif_orientation_applied(tmp_path: Path) -> None:
    exif_rotated_jpeg(tmp_path / "e.jpg")
    img = load_image(tmp_path / "e.jpg")
    assert img.size == (32, 48)  # stored 48x32, rotated 90 degrees clockwise for display
    top, bottom = np.asarray(img, np.int16)[:20].mean((0, 1)), np.asarray(img)[28:].mean((0, 1))
    assert top[0] > 200 and top[2] < 50  # the red left half is now on top
    assert bottom[2] > 200 and bottom[0] < 50


def test_odd_names_load(tmp_path: Path) -> None:
    for name in ["with space.png", "#hash.png", "ünïcødé 日本.png"]:
        noise(1).save(tmp_path / name)
        assert load_image(tmp_path / name).size == (32, 32)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.png", b"", r"empty file \(0 bytes\)"),
        ("text.png", b"hello, not an image\n", r"not an image \(Pillow cannot identify the file\)"),
        ("random.jpg", bytes(range(256)) * 8, r"not an image \(Pillow cannot identify the file\)"),
    ],
)
def test_unreadable_files_give_reasons(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UnreadableImage, match=rf"{name}: {reason}$") as exc:
        load_image(tmp_path / name)
    assert isinstance(exc.value, DataError)
    assert exc.value.path == tmp_path / name


def test_truncated_jpeg(tmp_path: Path) -> None:
    noise(5, (64, 64)).save(tmp_path / "t.jpg", quality=90)
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImage, match=r"corrupt image data: image file is truncated"):
        load_image(tmp_path / "t.jpg")


def test_too_small(tmp_path: Path) -> None:
    noise(1, (8, 20)).save(tmp_path / "small.png")
    with pytest.raises(
        UnreadableImage,
        match=r"too small: 8x20 px \(minimum 16 px per side, data\.min_image_size\)",
    ):
        load_image(tmp_path / "small.png", min_size=16)
    assert load_image(tmp_path / "small.png", min_size=8).size == (8, 20)


@pytest.mark.parametrize("side", [20000, 10000])  # Pillow's error (>2x limit) and its warning
def test_decompression_bomb_is_a_skip_not_a_crash(tmp_path: Path, side: int) -> None:
    (tmp_path / "bomb.png").write_bytes(png_header_only(side, side))
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(
        UnreadableImage,
        match=rf"decompression bomb guard: {side * side} pixels exceeds Pillow's limit of {limit} "
        r"\(PIL\.Image\.MAX_IMAGE_PIXELS\)",
    ):
        load_image(tmp_path / "bomb.png")


def test_configured_pixel_limit_below_and_above_pillows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    noise(1, (64, 64)).save(tmp_path / "x.png")
    with pytest.raises(
        UnreadableImage,
        match=r"decompression bomb guard: 4096 pixels exceeds the limit of 1000 "
        r"\(data\.max_image_pixels\)",
    ):
        load_image(tmp_path / "x.png", max_pixels=1000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow alone would refuse 4096 px
    assert load_image(tmp_path / "x.png", max_pixels=10_000).size == (64, 64)
    assert Image.MAX_IMAGE_PIXELS == 1000  # the global is restored


def test_staged_dir_refuses_non_empty_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with (
        pytest.raises(DataError, match=r"out already exists and is not empty; pass overwrite=True"),
        staged_dir(out),
    ):
        pass
    with pytest.raises(RuntimeError, match="boom"), staged_dir(out, overwrite=True) as stage:
        (stage / "new.txt").write_text("half")
        raise RuntimeError("boom")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # old content untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging leftovers
    with staged_dir(out, overwrite=True) as stage:
        (stage / "new.txt").write_text("done")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
