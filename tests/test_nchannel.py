"""N-channel data: grey (1) and multispectral (4) datasets end to end, and >8-bit pixel scaling.

Datasets are built here from the synthetic benchmark: a grey->RGB "colourisation" set (A 1
channel, B 3) and a 4-band set (RGB + a near-infrared-like band, 16-bit TIFFs and a float .npy).
Each is preprocessed, trained for a few steps, exported to ONNX (parity-gated) and translated.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from cyclegan.config import ConfigError, config_from_dict
from cyclegan.data.io import UnreadableImage, load_image, load_image_info, scale_to_uint8
from cyclegan.evaluate import evaluate
from cyclegan.evaluation import metrics as M
from cyclegan.evaluation.errors import EvalError
from cyclegan.export import export
from cyclegan.models.onnx_generator import OnnxGenerator
from cyclegan.preprocess import preprocess
from cyclegan.serving import OnnxTranslator, ServingError
from cyclegan.train import train
from cyclegan.translate import translate
from tests.train_utils import tiny_params

A_SPLITS, B_SPLITS = ("trainA", "testA", "testB_gt"), ("trainB", "testB", "testA_gt")


def _four_bands(rgb: np.ndarray) -> np.ndarray:
    """uint16 H×W×4: RGB at 16 bits plus a fourth band (an 'infrared' made of R and G)."""
    x = rgb.astype(np.uint16) * 257
    nir = ((x[..., 0].astype(np.uint32) + x[..., 1]) // 2).astype(np.uint16)
    return np.concatenate([x, nir[..., None]], axis=-1)


def _raw_dataset(root: Path, nc: tuple[int, int]) -> Path:
    """The synthetic benchmark with A in ``nc[0]`` and B in ``nc[1]`` channels.

    1 channel: grey PNGs plus one float [0, 1] ``.npy``; 3: the RGB PNGs; 4: 16-bit TIFFs plus one
    channels-first float ``.npy``.
    """
    from cyclegan.data.synth import synthesize

    src = root / "synth"
    synthesize(src, train=6, test=3, size=32, seed=0)
    raw = root / "raw"
    for split_dir in sorted(p for p in src.iterdir() if p.is_dir()):
        split = split_dir.name
        channels = nc[0] if split in A_SPLITS else nc[1]
        (raw / split).mkdir(parents=True)
        for i, f in enumerate(sorted(split_dir.iterdir())):
            rgb = np.asarray(Image.open(f).convert("RGB"))
            dest = raw / split / f.stem
            if channels == 3:
                Image.fromarray(rgb).save(dest.with_suffix(".png"))
            elif channels == 1 and i == 0 and split.startswith("train"):
                np.save(
                    dest.with_suffix(".npy"), np.asarray(Image.fromarray(rgb).convert("L")) / 255
                )
            elif channels == 1:
                Image.fromarray(rgb).convert("L").save(dest.with_suffix(".png"))
            elif i == 0 and split.startswith("train"):
                np.save(dest.with_suffix(".npy"), _four_bands(rgb).transpose(2, 0, 1) / 65535)
            else:
                tifffile.imwrite(dest.with_suffix(".tif"), _four_bands(rgb))
    return raw


def _params(tmp: Path, raw: Path, nc: tuple[int, int], **extra: dict) -> dict:
    p = tiny_params(
        tmp,
        tmp / "processed",
        model={
            "generator": "resnet_6blocks",
            "ngf": 8,
            "ndf": 8,
            "input_nc": nc[0],
            "output_nc": nc[1],
        },
        train={"steps": 4, "checkpoint_every": 4, "sample_every": 4, "eval_every": 4},
        export={
            "out_dir": str(tmp / "onnx"),
            "metrics_file": str(tmp / "metrics" / "export.json"),
            "parity_sizes": [[32, 32], [36, 28]],
            "parity_images": 2,
        },
        evaluate={
            "out_dir": str(tmp / "metrics"),
            "report_dir": str(tmp / "report"),
            "fid": False,
            "lpips": False,
            "bootstrap": 20,
            "classifier_steps": 5,
            "report_images": 2,
            "curve": False,
        },
        preprocess={"size": 32},
        **extra,
    )
    p["data"]["raw_dir"] = str(raw)
    return p


def _pipeline(tmp: Path, nc: tuple[int, int], onnx: bool = True) -> tuple:
    """preprocess -> train (4 steps, quick score) -> export (parity) -> translate both ways."""
    cfg = config_from_dict(_params(tmp, _raw_dataset(tmp, nc), nc))
    pre = preprocess(cfg)
    run = train(cfg)
    assert run.best_score is not None  # the weight-free quick score ran on N-channel data
    exp = export(cfg) if onnx else None
    model, backend = (tmp / "onnx", "onnx") if onnx else (Path(cfg.train.out_dir), "torch")
    outs = {}
    for direction, split in (("AtoB", "testA"), ("BtoA", "testB")):
        out = tmp / f"out_{direction}"
        res = translate(pre.out_dir / split, out, model, direction, backend)
        assert len(res.written) == 3 and not res.failed, res.summary()
        outs[direction] = res.written
    return cfg, pre, exp, outs


def test_grey_dataset_end_to_end(tmp_path: Path) -> None:
    cfg, pre, exp, outs = _pipeline(tmp_path, (1, 1))
    manifest = json.loads(pre.manifest.read_text())
    assert manifest["channels"] == {"A": 1, "B": 1}
    names = sorted(p.name for p in (pre.out_dir / "trainA").iterdir())
    assert names[:2] == ["00000.png", "00001.png"]  # the .npy became a PNG like the others
    for split in ("trainA", "trainB", "testA_gt", "testB"):
        assert {Image.open(p).mode for p in (pre.out_dir / split).iterdir()} == {"L"}, split
    # the float .npy was scaled x255: exactly the grey PNG it was made from
    npy = np.load(Path(cfg.data.raw_dir) / "trainA" / "00000.npy")
    got = np.asarray(Image.open(pre.out_dir / "trainA/00000.png"))
    assert np.array_equal(got, np.rint(npy * 255))
    meta = exp.metadata["AtoB"]
    assert (meta["layout"], meta["input_channels"], meta["output_channels"]) == (
        "NCHW grey",
        "1",
        "1",
    )
    assert max(r.max_abs for r in exp.parity) <= cfg.export.tolerance
    assert {r.source for r in exp.parity} == {"random", "real"}  # real grey images were used
    for direction in ("AtoB", "BtoA"):
        assert {(Image.open(p).mode, Image.open(p).size, p.suffix) for p in outs[direction]} == {
            ("L", (32, 32), ".png")
        }
    # the torch backend (checkpoint) gives the same pixels as the ONNX file (rounding aside)
    torch_out = translate(
        pre.out_dir / "testB", tmp_path / "torch_BtoA", cfg.train.out_dir, "BtoA", "torch"
    )
    for a, b in zip(outs["BtoA"], torch_out.written, strict=True):
        diff = np.abs(np.asarray(Image.open(a), np.int16) - np.asarray(Image.open(b), np.int16))
        assert diff.max() <= 1


def test_grey_to_rgb_trains_translates_and_evaluates(tmp_path: Path) -> None:
    cfg, pre, _, outs = _pipeline(tmp_path, (1, 3), onnx=False)
    for split, mode in (("trainA", "L"), ("testB_gt", "L"), ("trainB", "RGB"), ("testA_gt", "RGB")):
        assert {Image.open(p).mode for p in (pre.out_dir / split).iterdir()} == {mode}, split
    assert {Image.open(p).mode for p in outs["AtoB"]} == {"RGB"}  # G_AB: 1 -> 3 channels
    assert {Image.open(p).mode for p in outs["BtoA"]} == {"L"}  # G_BA: 3 -> 1
    res = evaluate(cfg)
    assert any(
        n.startswith("domain accuracy skipped: domain A has 1 channels and B 3") for n in res.notes
    )
    assert "domain_acc" not in res.metrics["AtoB"] and "l1_to_gt" in res.metrics["AtoB"]
    assert "identity_l1_to_gt" not in res.metrics["AtoB"]  # grey input vs RGB truth: no baseline


def test_four_band_dataset_end_to_end(tmp_path: Path) -> None:
    cfg, pre, exp, outs = _pipeline(tmp_path, (4, 4))
    manifest = json.loads(pre.manifest.read_text())
    assert manifest["channels"] == {"A": 4, "B": 4}
    for name in ("00000", "00001"):  # from a float C×H×W .npy, and from a uint16 TIFF
        arr = tifffile.imread(pre.out_dir / "trainB" / f"{name}.tif")
        assert arr.shape == (32, 32, 4) and arr.dtype == np.uint8
        # [0, 1] floats x255 and 16-bit bands /257: the RGB bands are the synthetic bytes again
        synth = np.asarray(Image.open(tmp_path / f"synth/trainB/{name}.png").convert("RGB"))
        assert np.array_equal(arr[..., :3], synth)
    assert exp.metadata["AtoB"]["layout"] == "NCHW 4-channel"
    assert OnnxGenerator(tmp_path / "onnx/generator_AtoB.onnx").out_channels == 4
    assert max(r.max_abs for r in exp.parity) <= cfg.export.tolerance
    out = [tifffile.imread(p) for p in outs["AtoB"]]
    assert {p.suffix for p in outs["AtoB"]} == {".tif"}
    assert {(a.shape, a.dtype.name) for a in out} == {((32, 32, 4), "uint8")}
    # the pyfunc model follows the channel count and refuses RGB with a clear message
    model = OnnxTranslator()
    model.generators = {"AtoB": OnnxGenerator(tmp_path / "onnx/generator_AtoB.onnx")}
    assert model.predict(None, np.zeros((1, 20, 24, 4), np.uint8)).shape == (1, 20, 24, 4)
    with pytest.raises(
        ServingError,
        match=r"direction AtoB takes uint8 images N×H×W×4 \(4-channel\), "
        r"got shape \(1, 20, 24, 3\)",
    ):
        model.predict(None, np.zeros((1, 20, 24, 3), np.uint8))
    # a 4-band classifier is trained (same channel count in both domains)
    res = evaluate(cfg)
    assert res.protocol["classifier"]["channels"] == 4
    assert "domain_acc" in res.metrics["AtoB"] and "identity_l1_to_gt" in res.metrics["AtoB"]


def test_rgb_only_metrics_repeat_grey_and_refuse_other_counts() -> None:
    grey = torch.zeros(2, 1, 8, 8)
    assert M.as_rgb(grey).shape == (2, 3, 8, 8)
    assert M.as_rgb(torch.zeros(2, 4, 8, 8)) is None
    with pytest.raises(
        EvalError, match=r"^images: expected images shaped N×3×H×W \(RGB\), got \(2, 1, 8, 8\)$"
    ):
        M.to_uint8(grey)
    assert M.l1(grey, grey + 1).tolist() == [0.5, 0.5]  # weight-free metrics take any count


def test_channel_mismatches_are_skipped_with_a_reason(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "three.tif", np.zeros((20, 20, 3), np.uint16))
    np.save(tmp_path / "chw.npy", np.zeros((4, 20, 18), np.float32))
    Image.new("RGB", (20, 20)).save(tmp_path / "rgb.png")
    with pytest.raises(UnreadableImage) as e:
        load_image(tmp_path / "three.tif", channels=4)
    assert e.value.reason == (
        "array of shape (20, 20, 3) has no axis of 4 channels (expected H×W×4 or 4×H×W: the "
        "domain's model.input_nc/output_nc)"
    )
    with pytest.raises(UnreadableImage) as e:
        load_image(tmp_path / "rgb.png", channels=4)
    assert (
        e.value.reason
        == "a 4-channel domain needs .tif/.tiff or .npy files (multispectral arrays), not .png"
    )
    img, info = load_image_info(tmp_path / "chw.npy", channels=4)
    assert img.shape == (20, 18, 4) and (info.width, info.height, info.format) == (18, 20, "NPY")
    with pytest.raises(UnreadableImage, match="too small: 18x20 px"):
        load_image(tmp_path / "chw.npy", min_size=19, channels=4)


def test_colour_jitter_needs_rgb_domains() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^transforms.color_jitter: colour jitter needs RGB domains, but model.input_nc=1",
    ):
        config_from_dict({"model": {"input_nc": 1}, "transforms": {"color_jitter": 0.1}})


# --- issue 12 item 19: deep pixel types are scaled to 8 bits, never clipped -------------------


def test_32bit_integer_tiff_is_min_max_scaled_not_clipped(tmp_path: Path) -> None:
    # values far beyond 16 bits: Pillow's conversion clipped 3 of these 4 columns to 255
    values = np.array([0, 200_000, 400_000, 1_000_000], np.int32)
    Image.fromarray(np.tile(values, (16, 4))).save(tmp_path / "i32.tif")
    img, info = load_image_info(tmp_path / "i32.tif")
    assert info.mode == "I"
    assert np.asarray(img)[0, :4].tolist() == [[0] * 3, [51] * 3, [102] * 3, [255] * 3]


def test_scale_to_uint8_rule() -> None:
    def s(values: list, dtype: str) -> list[int]:
        return scale_to_uint8(np.array(values, dtype=dtype)).tolist()

    assert s([0, 257, 32896, 65535], "uint16") == [0, 1, 128, 255]  # full 16-bit range
    assert s([0, 7, 255], "int32") == [0, 7, 255]  # already 8-bit values
    assert s([0, 514, 65535], "int32") == [0, 2, 255]  # 16-bit data in a 32-bit container
    assert s([-100, 0, 100], "int16") == [0, 128, 255]  # signed: min-max (127.5 rounds to even)
    assert s([0.0, 0.5, 1.0], "float32") == [0, 128, 255]  # [0, 1] floats
    assert s([0.0, 100.0, 255.0], "float32") == [0, 100, 255]  # [0, 255] floats
    assert s([-1.0, 0.0, 3.0], "float64") == [0, 64, 255]  # anything else: min-max
    assert s([float("nan"), 1.0, float("inf")], "float32") == [0, 255, 0]  # non-finite -> 0
    assert s([5, 5], "int64") == [5, 5] and s([70_000, 70_000], "int64") == [0, 0]
    four = np.stack([np.full((2, 2), v, np.uint32) for v in (0, 10**6, 2 * 10**6, 4 * 10**6)], -1)
    assert scale_to_uint8(four)[0, 0].tolist() == [0, 64, 128, 255]  # one range for all bands


def test_tiffs_pillow_cannot_open_are_read_with_tifffile(tmp_path: Path) -> None:
    rgb16 = np.array([[[0, 257, 65535]]], np.uint16).repeat(20, 0).repeat(20, 1)
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16)  # Pillow: "cannot identify image file"
    assert np.asarray(load_image(tmp_path / "rgb16.tif"))[0, 0].tolist() == [0, 1, 255]
    four = np.zeros((20, 20, 4), np.uint8)
    tifffile.imwrite(tmp_path / "four.tif", four, photometric="minisblack", planarconfig="contig")
    with pytest.raises(UnreadableImage, match=r"array of shape \(20, 20, 4\) has no axis of 1 "):
        load_image(tmp_path / "four.tif", channels=1)
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(UnreadableImage, match=r"not an image \(Pillow cannot identify the file\)"):
        load_image(tmp_path / "junk.tif")


def test_fid_kid_say_why_they_skip_multispectral_sets() -> None:
    from cyclegan.evaluate import set_metrics
    from cyclegan.evaluation.suite import Direction

    x = torch.zeros(2, 4, 16, 16)
    dirs = [Direction(n, x, x, x, None, ["a", "b"]) for n in ("AtoB", "BtoA")]
    notes: list[str] = []
    assert set_metrics(config_from_dict({}), None, dirs, notes) == ({}, {})  # no Inception run
    assert notes == [
        "FID/KID skipped: the Inception network takes RGB; these domains have [4] channels "
        "(1-channel images are repeated to RGB, other counts cannot be scored)"
    ]
