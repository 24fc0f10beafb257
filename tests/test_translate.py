"""``cyclegan translate``: real ONNX Runtime on real photos, odd sizes, odd modes, bad files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cyclegan.cli import main
from cyclegan.config import Config
from cyclegan.data.io import load_image
from cyclegan.export import ExportResult, export
from cyclegan.models.onnx_generator import OnnxGenerator, OnnxModelError, pad_to_multiple
from cyclegan.translate import TranslateError, translate
from tests.export_utils import make_checkpoint, tiny_cfg, write_image


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, ExportResult]:
    tmp = tmp_path_factory.mktemp("translate")
    cfg = tiny_cfg(tmp, export={"parity_images": 0})
    make_checkpoint(cfg, Path(cfg.train.out_dir) / "checkpoints" / "best.pt")
    out = Path(cfg.export.out_dir)
    out.mkdir(parents=True)
    (out / "generator_AtoB.fp16.onnx").write_bytes(b"from an earlier fp16 export")
    (out / "generator_mine.onnx").write_bytes(b"a user's own file")
    return cfg, export(cfg)


def test_export_replaces_stale_variants_but_not_other_files(
    model: tuple[Config, ExportResult],
) -> None:
    _, res = model
    assert sorted(p.name for p in res.out_dir.iterdir()) == [
        "export.json", "generator_AtoB.onnx", "generator_BtoA.onnx", "generator_mine.onnx",
    ]  # fmt: skip


def _expected(onnx_file: Path, src: Path) -> np.ndarray:
    """What translating ``src`` must give: the loaded RGB image through the generator."""
    return OnnxGenerator(onnx_file).translate_images(np.asarray(load_image(src)))[0]


def test_real_photos_keep_their_size(
    model: tuple[Config, ExportResult],
    sunflower: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, res = model
    inp = tmp_path / "photos"
    inp.mkdir()
    for src in sorted((sunflower / "testA").glob("*.jpg"))[:5]:
        os.symlink(src, inp / src.name)
    photo = Image.open(inp / src.name).resize((300, 217), Image.Resampling.BICUBIC)
    photo.save(inp / "odd_300x217.jpg")
    out = tmp_path / "out"
    args = ["translate", str(inp), str(out), "--model", str(res.out_dir), "--batch-size", "4"]
    assert main(args) == 0
    assert "translated 6 image(s) AtoB with onnx" in capsys.readouterr().out
    for src in sorted(inp.iterdir()):
        got = np.asarray(Image.open(out / f"{src.stem}.png"))
        assert got.shape == ((217, 300, 3) if src.stem.startswith("odd") else (256, 256, 3))
        assert got.dtype == np.uint8
        assert np.array_equal(got, _expected(res.files["AtoB"], src))
    # the PyTorch backend (from the checkpoint) agrees to within one grey level
    r2 = translate(inp, tmp_path / "torch", model=res.checkpoint, backend="torch")
    assert len(r2.written) == 6 and r2.model == str(res.checkpoint)
    for dest in r2.written:
        a = np.asarray(Image.open(dest), dtype=np.int16)
        b = np.asarray(Image.open(out / dest.name), dtype=np.int16)
        assert np.abs(a - b).max() <= 1


def test_padding_is_reflection_and_cropped_back() -> None:
    x = np.arange(2 * 3 * 217 * 30, dtype=np.float32).reshape(2, 3, 217, 30)
    padded, (top, left) = pad_to_multiple(x, 4, min_size=8)
    assert padded.shape == (2, 3, 220, 32) and (top, left) == (1, 1)
    assert np.array_equal(padded[:, :, top : top + 217, left : left + 30], x)
    assert np.array_equal(padded[:, :, 0, 1:-1], x[:, :, 1])  # reflected, not repeated
    tiny, (t, lft) = pad_to_multiple(x[:, :, :3, :5], 4, min_size=8)
    assert tiny.shape == (2, 3, 8, 8) and (t, lft) == (2, 1)


def test_any_size_and_mode_gives_same_size_rgb(
    model: tuple[Config, ExportResult], tmp_path: Path
) -> None:
    _, res = model
    inp = tmp_path / "in"
    write_image(inp / "odd.png", (300, 217))
    write_image(inp / "palette.gif", (50, 41), "P")
    write_image(inp / "grey.png", (33, 47), "L")
    write_image(inp / "cmyk.jpg", (64, 30), "CMYK")
    write_image(inp / "tiny.png", (5, 3))
    Image.new("RGBA", (20, 24), (255, 0, 0, 0)).save(inp / "clear.png")  # fully transparent
    Image.new("RGB", (20, 24), (255, 255, 255)).save(tmp_path / "white.png")
    deep = (np.random.default_rng(0).integers(0, 65535, (19, 23))).astype(np.uint16)
    Image.fromarray(deep).save(inp / "deep16.png")  # I;16
    rotated = Image.fromarray(np.zeros((20, 40, 3), np.uint8))  # 40 wide, 20 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° CW to display": displayed 20 wide, 40 high
    rotated.save(inp / "exif.jpg", exif=exif)
    r = translate(inp, tmp_path / "out", model=res.out_dir, batch_size=3)
    assert not r.failed and len(r.written) == 8
    sizes = {p.stem: Image.open(p).size for p in r.written}
    assert sizes == {
        "odd": (300, 217), "palette": (50, 41), "grey": (33, 47), "cmyk": (64, 30),
        "tiny": (5, 3), "clear": (20, 24), "deep16": (23, 19), "exif": (20, 40),
    }  # fmt: skip
    assert {Image.open(p).mode for p in r.written} == {"RGB"}
    clear = np.asarray(Image.open(tmp_path / "out" / "clear.png"))
    assert np.array_equal(clear, _expected(res.files["AtoB"], tmp_path / "white.png"))
    odd = np.asarray(Image.open(tmp_path / "out" / "odd.png"))
    assert np.array_equal(odd, _expected(res.files["AtoB"], inp / "odd.png"))


def test_bad_files_are_reported_and_the_folder_goes_on(
    model: tuple[Config, ExportResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, res = model
    inp = tmp_path / "in"
    write_image(inp / "good.png", (32, 32))
    (inp / "broken.jpg").write_bytes(b"not a jpeg")
    (inp / "empty.png").write_bytes(b"")
    good = inp / "good.png"
    (inp / "cut.png").write_bytes(good.read_bytes()[:200])  # truncated PNG
    out = tmp_path / "out"
    code = main(["translate", str(inp), str(out), "--model", str(res.out_dir)])
    assert code == 1
    stdout = capsys.readouterr().out
    assert f"failed: {inp / 'broken.jpg'}: not an image (Pillow cannot identify the file)" in stdout
    assert f"failed: {inp / 'empty.png'}: empty file (0 bytes)" in stdout
    assert f"failed: {inp / 'cut.png'}: corrupt image data" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]


def test_existing_outputs_are_skipped_unless_overwrite(
    model: tuple[Config, ExportResult], tmp_path: Path
) -> None:
    _, res = model
    inp = tmp_path / "in"
    for i in range(3):
        write_image(inp / f"im{i}.jpg", (40, 32), seed=i)
    out = tmp_path / "out"
    out.mkdir()
    (out / "im1.png").write_bytes(b"keep me")
    r = translate(inp, out, model=res.out_dir)
    assert r.skipped == [out / "im1.png"] and len(r.written) == 2
    assert (out / "im1.png").read_bytes() == b"keep me"
    assert "skipped 1 existing" in r.summary()
    r = translate(inp, out, model=res.out_dir, overwrite=True)
    assert not r.skipped and len(r.written) == 3
    assert Image.open(out / "im1.png").size == (40, 32)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files


def test_batches_of_same_size_images_match_one_by_one(
    model: tuple[Config, ExportResult], tmp_path: Path
) -> None:
    _, res = model
    inp = tmp_path / "in"
    for i in range(5):
        write_image(inp / f"a{i}.png", (36, 28) if i % 2 else (28, 36), seed=i)
    one = translate(inp, tmp_path / "one", model=res.out_dir, batch_size=1)
    many = translate(inp, tmp_path / "many", model=res.out_dir, batch_size=4)
    assert len(one.written) == len(many.written) == 5
    for p in one.written:
        a = np.asarray(Image.open(p), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "many" / p.name), dtype=np.int16)
        assert np.abs(a - b).max() <= 1


def test_single_file_glob_and_name_collisions(
    model: tuple[Config, ExportResult], tmp_path: Path
) -> None:
    _, res = model
    inp = tmp_path / "in"
    write_image(inp / "x.jpg", (32, 40))
    write_image(inp / "x.png", (32, 40), seed=1)
    write_image(inp / "sub" / "y.png", (24, 24))
    r = translate(inp / "x.jpg", tmp_path / "single.png", model=res.out_dir)
    assert r.written == [tmp_path / "single.png"]
    r = translate(str(inp / "**" / "*.png"), tmp_path / "g", model=res.out_dir)
    assert sorted(p.name for p in r.written) == ["x.png", "y.png"]
    r = translate(inp, tmp_path / "c", model=res.out_dir)
    assert r.written == [tmp_path / "c" / "x.png"]
    assert r.failed == [(inp / "x.png", f"output name x.png is already used by {inp / 'x.jpg'}")]


def test_bad_arguments_are_clear_errors(
    model: tuple[Config, ExportResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, res = model
    inp = tmp_path / "in"
    write_image(inp / "a.png", (32, 32))
    write_image(inp / "b.png", (32, 32))
    pattern = str(tmp_path / "nothing" / "*.jpg")
    with pytest.raises(TranslateError) as e:
        translate(pattern, tmp_path / "o", model=res.out_dir)
    assert str(e.value).startswith(
        f"no input images: {pattern} is not a file, a folder or a glob matching images ("
    )
    with pytest.raises(TranslateError, match=r"looks like a file, but 2 inputs were given"):
        translate(inp, tmp_path / "o.png", model=res.out_dir)
    with pytest.raises(TranslateError) as e:
        translate(inp, tmp_path / "o", model=res.files["AtoB"], direction="BtoA")
    assert str(e.value) == (
        f"{res.files['AtoB']} translates AtoB, but direction BtoA was asked for; pass "
        "--direction AtoB or the other file"
    )
    missing = tmp_path / "none"
    assert main(["translate", str(inp), str(tmp_path / "o"), "--model", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {missing}: ONNX model not found. Run `cyclegan export` "
        "first or pass the right --model (a folder with generator_AtoB.onnx/generator_BtoA.onnx "
        "or a .onnx)"
    )
    assert not (tmp_path / "o").exists()


def test_corrupt_onnx_file_is_a_clear_error(
    model: tuple[Config, ExportResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, res = model
    bad = tmp_path / "models"
    bad.mkdir()
    data = res.files["AtoB"].read_bytes()
    (bad / "generator_AtoB.onnx").write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(OnnxModelError) as e:
        OnnxGenerator(bad / "generator_AtoB.onnx")
    msg = str(e.value)
    assert msg.startswith(f"{bad / 'generator_AtoB.onnx'}: not a loadable ONNX model (")
    assert msg.endswith("The file is corrupt or truncated; re-create it with `cyclegan export`")
    write_image(tmp_path / "a.png", (32, 32))
    assert (
        main(["translate", str(tmp_path / "a.png"), str(tmp_path / "o"), "--model", str(bad)]) == 2
    )
    assert capsys.readouterr().err.strip() == f"error: {msg}"


def test_torch_backend_rejects_a_checkpoint_of_another_architecture(
    model: tuple[Config, ExportResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import dataclasses

    import torch

    from cyclegan.training.checkpoint import save_checkpoint

    cfg, res = model
    state = torch.load(res.checkpoint, weights_only=True)
    nine = dataclasses.replace(cfg.model, generator="resnet_9blocks")
    state["config"] = dataclasses.replace(cfg, model=nine).to_dict()
    ckpt = save_checkpoint(tmp_path / "nine.pt", state)
    write_image(tmp_path / "a.png", (32, 32))
    args = ["translate", str(tmp_path / "a.png"), str(tmp_path / "o"), "--model", str(ckpt)]
    assert main([*args, "--backend", "torch"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"error: checkpoint {ckpt} nets.G_AB (generator 'resnet_9blocks') does not match the "
        "network it is loaded into: missing keys [model.16.conv_block.1.bias"
    )
    assert main([*args, "--backend", "onnx"]) == 2  # a .pt is not an ONNX model either
    assert capsys.readouterr().err.strip() == (
        f"error: {ckpt} is a PyTorch checkpoint, not an ONNX model: pass --backend torch to "
        "run it, or --model with the `cyclegan export` output (default models/onnx)"
    )
    shutil.rmtree(tmp_path / "o", ignore_errors=True)


def test_an_onnx_model_that_is_not_a_generator_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "mlp", [x], [y])
    path = tmp_path / "mlp.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    with pytest.raises(OnnxModelError) as e:
        OnnxGenerator(path)
    assert str(e.value) == (
        f"{path}: not an image generator: expected one N×C×H×W input, got [('x', ['N', 10])]"
    )


def test_backend_mismatches_are_named_both_ways(
    model: tuple[Config, ExportResult], tmp_path: Path
) -> None:
    cfg, res = model
    write_image(tmp_path / "a.png", (32, 32))
    run_dir = Path(cfg.train.out_dir)
    with pytest.raises(TranslateError) as e:  # a run folder given to the ONNX backend
        translate(tmp_path / "a.png", tmp_path / "o", model=run_dir, backend="onnx")
    assert str(e.value).startswith(
        f"{run_dir / 'checkpoints' / 'best.pt'} is a PyTorch checkpoint, not an ONNX model: "
    )
    with pytest.raises(TranslateError) as e:  # the export folder given to the torch backend
        translate(tmp_path / "a.png", tmp_path / "o", model=res.out_dir, backend="torch")
    assert str(e.value) == (
        f"{res.out_dir} holds ONNX models (generator_AtoB.onnx, generator_BtoA.onnx, "
        "generator_mine.onnx), not a PyTorch checkpoint: pass --backend onnx to run them, or "
        "--model with a .pt or a training run folder"
    )
    with pytest.raises(TranslateError) as e:
        translate(tmp_path / "a.png", tmp_path / "o", model=res.files["AtoB"], backend="torch")
    assert str(e.value).startswith(f"{res.files['AtoB']} is an ONNX model, not a PyTorch ")
    assert not (tmp_path / "o").exists()


def test_empty_input_folder_is_an_error_not_zero_images(
    model: tuple[Config, ExportResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, res = model
    empty = tmp_path / "in"
    (empty / "nested").mkdir(parents=True)
    args = ["translate", str(empty), str(tmp_path / "o"), "--model", str(res.out_dir)]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith(
        f"error: no input images in folder {empty}: it holds 1 other entry (e.g. nested); "
        "images are read directly in the folder (not sub-folders) with the extensions .bmp, "
    )
    (empty / "nested").rmdir()
    with pytest.raises(TranslateError, match=r"in folder .*in: it holds nothing; images are"):
        translate(empty, tmp_path / "o", model=res.out_dir)
    assert not (tmp_path / "o").exists()
