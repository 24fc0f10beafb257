"""cyclegan.preprocess and cyclegan.data.ingest: only good images out, deterministic, atomic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cyclegan.cli import main
from cyclegan.config import Config, DataConfig, PreprocessConfig, SynthConfig
from cyclegan.data.errors import DataError
from cyclegan.data.ingest import ingest
from cyclegan.data.synth import synthesize
from cyclegan.preprocess import output_names, preprocess
from tests.data_factory import make_layout, make_messy_dataset


def _cfg(raw: Path, out: Path, size: int = 32, **data: object) -> Config:
    return Config(
        data=DataConfig(raw_dir=str(raw), processed_dir=str(out), **data),  # type: ignore[arg-type]
        preprocess=PreprocessConfig(size=size),
    )


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_output_names_unique_and_stable() -> None:
    names = ["a.jpg", "a.png", "B.png", "b.JPG", "c d#.jpeg", "x_jpg.png", "x.jpg", "x.png"]
    assert output_names(names) == {
        "a.jpg": "a_jpg.png",
        "a.png": "a_png.png",
        "B.png": "B_png.png",
        "b.JPG": "b_JPG.png",
        "c d#.jpeg": "c d#.png",
        "x.jpg": "x_jpg.png",
        "x.png": "x_png.png",
        "x_jpg.png": "x_jpg_1.png",
    }


def test_messy_dataset_only_good_images_out(tmp_path: Path) -> None:
    expected = make_messy_dataset(tmp_path / "raw")
    res = preprocess(_cfg(tmp_path / "raw", tmp_path / "out", min_image_size=16))
    out = tmp_path / "out"
    assert res.counts == expected["counts"]
    stems = {
        s: sorted(
            Path(n).stem if n not in ("same.jpg", "same.png") else f"same_{n[-3:]}" for n in names
        )
        for s, names in expected["good"].items()
    }
    for split, names in stems.items():
        assert sorted(p.stem for p in (out / split).iterdir()) == names
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "testA",
        "testB",
        "trainA",
        "trainB",
        "validation.json",
    ]
    for p in out.rglob("*.png"):
        with Image.open(p) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "RGB", (32, 32))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == expected["counts"] and manifest["skipped"] == 7
    assert len(manifest["files"]) == sum(expected["counts"].values())
    for rel, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256((out / rel).read_bytes()).hexdigest()
        src = tmp_path / "raw" / entry["source"]
        assert entry["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert manifest["files"]["trainB/same_jpg.png"]["source"] == "trainB/same.jpg"
    validation = json.loads((out / "validation.json").read_text())
    assert sorted(s["path"] for s in validation["skipped"]) == sorted(expected["skipped"])
    assert {s["path"] for s in res.skipped} == set(expected["skipped"])
    assert "skipped 7 files" in res.summary()


def test_pixels_resized_and_converted(tmp_path: Path) -> None:
    raw = make_layout(tmp_path / "raw", {"trainA": 1, "trainB": 1, "testA": 1, "testB": 1})
    Image.new("L", (40, 20), 77).save(raw / "trainA" / "000.png")
    preprocess(_cfg(raw, tmp_path / "out", size=16))
    arr = np.asarray(Image.open(tmp_path / "out" / "trainA" / "000.png"))
    assert arr.shape == (16, 16, 3) and (arr == 77).all()
    src = Image.open(raw / "testB" / "000.png").convert("RGB")
    expected = np.asarray(src.resize((16, 16), Image.Resampling.BICUBIC))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "testB" / "000.png")), expected)


def test_deterministic_and_gt_kept(tmp_path: Path) -> None:
    synthesize(tmp_path / "raw", train=4, test=3, size=32, progress=False)
    preprocess(_cfg(tmp_path / "raw", tmp_path / "p1", size=32))
    preprocess(_cfg(tmp_path / "raw", tmp_path / "p2", size=32))
    t1, t2 = _tree(tmp_path / "p1"), _tree(tmp_path / "p2")
    assert t1 == t2
    assert {k.split("/")[0] for k in t1 if "/" in k} == {
        "trainA",
        "trainB",
        "testA",
        "testB",
        "testA_gt",
        "testB_gt",
    }
    names = sorted(p.name for p in (tmp_path / "p1" / "testA").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "p1" / "testA_gt").iterdir())
    # same size in and out: pixels pass through unchanged
    for name in names:
        a = np.asarray(Image.open(tmp_path / "raw" / "testA_gt" / name))
        assert np.array_equal(a, np.asarray(Image.open(tmp_path / "p1" / "testA_gt" / name)))


def test_below_minimum_fails_and_writes_nothing(tmp_path: Path) -> None:
    raw = make_layout(tmp_path / "raw", {"trainA": 2, "trainB": 2, "testA": 1, "testB": 1})
    (raw / "trainB" / "000.png").write_bytes(b"garbage")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous run")
    with pytest.raises(
        DataError,
        match=r"preprocess: .*raw is not a usable dataset: trainB/ has 1 usable images, below the "
        r"minimum 2 \(data\.min_train\)\. 1 files were skipped as unusable Run `cyclegan data "
        r"validate .*raw` for the full report",
    ):
        preprocess(_cfg(raw, out, min_train=2))
    assert _tree(out) == {"old.txt": b"previous run"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]  # no staging left


def test_missing_raw_dir(tmp_path: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"preprocess: raw data folder .*nope not found \(data\.raw_dir\); run "
        r"`cyclegan data fetch`",
    ):
        preprocess(_cfg(tmp_path / "nope", tmp_path / "out"))


def test_ingest_synth_and_folder(tmp_path: Path) -> None:
    cfg = Config(
        data=DataConfig(raw_dir=str(tmp_path / "raw"), synth=SynthConfig(train=3, test=2, size=16))
    )
    res = ingest(cfg, progress=False)
    assert res.counts["trainA"] == 3 and res.counts["testB_gt"] == 2
    assert len(list((tmp_path / "raw" / "testA_gt").iterdir())) == 2
    src = make_layout(tmp_path / "src", {"trainA": 1, "trainB": 2, "testA": 1, "testB": 1})
    res = ingest(Config(data=DataConfig(source=str(src), raw_dir=str(tmp_path / "raw"))))
    assert res.counts == {"trainA": 1, "trainB": 2, "testA": 1, "testB": 1}
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [
        ".cyclegan-fetch.json",
        "testA",
        "testB",
        "trainA",
        "trainB",
    ]
    assert f"data ({src}) -> {tmp_path / 'raw'}" in res.summary()


def test_cli_fetch_and_preprocess(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw, out = tmp_path / "raw", tmp_path / "proc"
    common = ["--set", f"data.raw_dir={raw}", "--set", f"data.processed_dir={out}"]
    synth = ["--set", "data.synth={train: 3, test: 2, size: 16, seed: 0}"]
    assert main(["data", "fetch", *common, *synth]) == 0
    assert main(["preprocess", *common, "--set", "preprocess.size=16"]) == 0
    assert "preprocessed ->" in capsys.readouterr().out
    assert len(json.loads((out / "manifest.json").read_text())["files"]) == 3 * 2 + 2 * 4
    (raw / "trainA").rename(raw / "moved")
    assert main(["preprocess", *common]) == 2
    assert "missing split folder trainA/" in capsys.readouterr().err
    assert main(["data", "fetch", *common, "--set", f"data.source={tmp_path / 'nothing'}"]) == 2
    assert "dataset source not found" in capsys.readouterr().err


def test_real_photos_preprocess(tmp_path: Path, sunflower: Path) -> None:
    res = preprocess(_cfg(sunflower, tmp_path / "out", size=32))
    assert res.counts == {"trainA": 500, "trainB": 500, "testA": 90, "testB": 85}
    assert res.skipped == []
    names = sorted(p.name for p in (tmp_path / "out" / "trainA").iterdir())
    assert names[0] == "#Sunflowers_8159620353_m.png" and len(names) == 500
