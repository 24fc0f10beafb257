"""cyclegan.data.synth: determinism, layout, exact ground truth and a real A/B style gap."""

from __future__ import annotations

import colorsys
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cyclegan.cli import main
from cyclegan.data.errors import DataError
from cyclegan.data.synth import BG_A, BG_B, sample_scene, style_b_color, synthesize

SPLITS = ("trainA", "trainB", "testA", "testB", "testA_gt", "testB_gt")


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), np.int32)


def _object_mask(img: np.ndarray, bg: tuple[int, int, int]) -> np.ndarray:
    return (img != np.array(bg)).any(-1)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    synthesize(out, train=30, test=8, size=64, seed=0, progress=False)
    return out


def test_layout_counts_names_and_readme(synth: Path) -> None:
    for split in SPLITS:
        n = 30 if split.startswith("train") else 8
        names = sorted(p.name for p in (synth / split).iterdir())
        assert names == [f"{i:05d}.png" for i in range(n)]
    for split in ("testA", "testB"):
        assert [p.name for p in sorted((synth / split).iterdir())] == [
            p.name for p in sorted((synth / f"{split}_gt").iterdir())
        ]
    img = Image.open(synth / "trainA" / "00000.png")
    assert (img.format, img.mode, img.size) == ("PNG", "RGB", (64, 64))
    params = json.loads((synth / "synth.json").read_text())
    assert (params["train"], params["test"], params["size"], params["seed"]) == (30, 8, 64, 0)
    assert "testA_gt/NAME is testA/NAME rendered in style B" in (synth / "README.txt").read_text()
    assert sorted(p.name for p in synth.iterdir()) == sorted([*SPLITS, "README.txt", "synth.json"])


def test_deterministic_by_seed(tmp_path: Path, synth: Path) -> None:
    again = synthesize(tmp_path / "again", train=30, test=8, size=64, seed=0, progress=False)
    assert _hashes(again.out) == _hashes(synth)
    other = synthesize(tmp_path / "other", train=30, test=8, size=64, seed=1, progress=False)
    base = _hashes(synth)
    differ = [k for k, v in _hashes(other.out).items() if k.endswith(".png") and v != base[k]]
    assert len(differ) == 2 * 30 + 4 * 8


def test_gt_is_the_same_scene_in_the_other_style(synth: Path) -> None:
    stripes = (np.arange(64) % 4 < 2)[:, None].repeat(64, 1)
    for i in range(8):
        a, gt = _load(synth / "testA" / f"{i:05d}.png"), _load(synth / "testA_gt" / f"{i:05d}.png")
        mask = _object_mask(a, BG_A)
        assert np.array_equal(mask, _object_mask(gt, BG_B))
        assert (gt[~mask] == BG_B).all()
        rotated = a[..., [2, 0, 1]]  # (r, g, b) -> (b, r, g)
        light, dark = mask & ~stripes, mask & stripes
        assert np.array_equal(gt[light], rotated[light])
        assert np.array_equal(gt[dark], np.rint(rotated[dark] * 0.5).astype(np.int32))
        b = _load(synth / "testB" / f"{i:05d}.png")
        b_gt = _load(synth / "testB_gt" / f"{i:05d}.png")
        assert np.array_equal(_object_mask(b, BG_B), _object_mask(b_gt, BG_A))


def test_train_scenes_differ_between_domains(synth: Path) -> None:
    masks_a = [_object_mask(_load(p), BG_A) for p in sorted((synth / "trainA").iterdir())]
    masks_b = [_object_mask(_load(p), BG_B) for p in sorted((synth / "trainB").iterdir())]
    assert not any(np.array_equal(ma, mb) for ma in masks_a for mb in masks_b)


def test_styles_differ_in_colour_and_texture(synth: Path) -> None:
    a = np.stack([_load(p) for p in sorted((synth / "trainA").iterdir())]).astype(np.float64)
    b = np.stack([_load(p) for p in sorted((synth / "trainB").iterdir())]).astype(np.float64)
    assert np.linalg.norm(a.mean((0, 1, 2)) - b.mean((0, 1, 2))) > 100  # colour statistics

    def hues(imgs: np.ndarray, bg: tuple[int, int, int]) -> np.ndarray:
        px = imgs[_object_mask(imgs.astype(np.int32), bg)] / 255.0
        return np.array([colorsys.rgb_to_hsv(*p)[0] * 360 for p in px[::7]])

    ha, hb = hues(a, BG_A), hues(b, BG_B)
    assert ((ha >= 0) & (ha <= 120.5)).mean() > 0.99  # warm hues in A
    assert ((hb >= 119.5) & (hb <= 240.5)).mean() > 0.99  # rotated by 120 degrees in B

    def vertical_hf(imgs: np.ndarray, bg: tuple[int, int, int]) -> float:
        mask = _object_mask(imgs.astype(np.int32), bg)
        inside = mask[:, 1:] & mask[:, :-1]
        return float(np.abs(np.diff(imgs, axis=1)).sum(-1)[inside].mean())

    assert vertical_hf(b, BG_B) > 10 * vertical_hf(a, BG_A)  # stripes: high-frequency texture


def test_hue_density_identifies_the_rotation() -> None:
    """B's object hues are distributed like A's rotated (h + 120), not like A's reflected
    (240 - h): with a uniform density on 0-120 both fit, and unpaired training picked either."""
    rng = np.random.default_rng(0)
    colours = [o.color_a for _ in range(500) for o in sample_scene(rng, 64)]

    def hue(rgb: tuple[int, int, int]) -> float:
        return colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] * 360

    ha = np.array([hue(c) for c in colours]) % 360
    hb = np.array([hue(style_b_color(c)) for c in colours])
    qs = [0.1, 0.25, 0.5, 0.75, 0.9]
    assert np.abs(np.quantile(hb, qs) - np.quantile(ha + 120, qs)).max() < 1.0
    assert np.abs(np.quantile(hb, qs) - np.quantile(240 - ha, qs)).max() > 40


def test_bad_arguments_and_overwrite(tmp_path: Path) -> None:
    msg = r"synth: --train and --test must be >= 1, got train=0, test=2"
    with pytest.raises(DataError, match=msg):
        synthesize(tmp_path / "x", train=0, test=2)
    with pytest.raises(DataError, match=r"synth: --size must be between 16 and 1024 px, got 8"):
        synthesize(tmp_path / "x", train=2, test=2, size=8)
    assert not (tmp_path / "x").exists()
    out = tmp_path / "o"
    synthesize(out, train=2, test=1, size=16, progress=False)
    with pytest.raises(DataError, match=r"o already exists and is not empty; pass overwrite=True"):
        synthesize(out, train=3, test=1, size=16, progress=False)
    synthesize(out, train=3, test=1, size=16, progress=False, overwrite=True)
    assert len(list((out / "trainA").iterdir())) == 3


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "cli")
    args = ["data", "synth", out, "--train", "3", "--test", "2", "--size", "32", "--seed", "4"]
    assert main(args) == 0
    assert "trainA=3, trainB=3, testA=2, testB=2, testA_gt=2, testB_gt=2" in capsys.readouterr().out
    assert main(args) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert main(["data", "synth", out + "2", "--train", "0"]) == 2
