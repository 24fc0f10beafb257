"""ONNX export: real torch.onnx export, onnx.checker, ONNX Runtime parity, atomic failure."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from cyclegan.cli import main
from cyclegan.config import Config, ModelConfig
from cyclegan.export import (
    ExportError,
    ExportResult,
    default_checkpoint,
    export,
    export_onnx,
    parity_inputs,
    quantize_int8,
    unwrap,
)
from cyclegan.models import build_generator, generator_size_multiple
from cyclegan.models.onnx_generator import OnnxGenerator
from cyclegan.training.checkpoint import CheckpointError, load_generators, save_checkpoint
from tests.export_utils import make_checkpoint, make_processed, tiny_cfg


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, ExportResult]:
    """One export of a tiny checkpoint with the fp16 and int8 variants and real test images."""
    tmp = tmp_path_factory.mktemp("export")
    cfg = tiny_cfg(tmp, export={"fp16": True, "int8": True})
    make_processed(Path(cfg.data.processed_dir))
    make_checkpoint(cfg, Path(cfg.train.out_dir) / "checkpoints" / "best.pt")
    return cfg, export(cfg)


def test_both_directions_are_checked_self_describing_files(
    exported: tuple[Config, ExportResult],
) -> None:
    cfg, res = exported
    out = Path(cfg.export.out_dir)
    assert res.out_dir == out
    assert sorted(p.name for p in out.iterdir()) == [
        "export.json",
        "generator_AtoB.fp16.onnx",
        "generator_AtoB.int8.onnx",
        "generator_AtoB.onnx",
        "generator_BtoA.fp16.onnx",
        "generator_BtoA.int8.onnx",
        "generator_BtoA.onnx",
    ]
    assert not [p for p in out.parent.iterdir() if ".staging-" in p.name]
    train_cfg, _, _ = load_generators(res.checkpoint)
    for direction, src in (("AtoB", "A"), ("BtoA", "B")):
        model = onnx.load(str(out / f"generator_{direction}.onnx"))
        onnx.checker.check_model(model, full_check=True)
        assert {o.domain: o.version for o in model.opset_import}[""] == cfg.export.opset
        dims = model.graph.input[0].type.tensor_type.shape.dim
        assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["direction"] == direction and meta["source_domain"] == src
        assert meta["input_normalization"] == "[-1,1] = x/127.5-1"
        assert meta["layout"] == "NCHW RGB"
        assert meta["size_multiple"] == str(generator_size_multiple(train_cfg.model)) == "4"
        assert meta["config_hash"] == train_cfg.hash()
        assert meta["generator"] == "resnet_6blocks"
        assert meta["checkpoint_step"] == "42" and meta["checkpoint"] == "best.pt"
        assert meta["precision"] == "fp32" and meta["min_size"] == "8"
        assert meta["data_hash"] == "unknown"  # no dvc.lock tracks the tmp data
        assert meta["git_commit"]
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["step"] == 42 and len(manifest["parity"]) == len(res.parity)
    metrics = json.loads(Path(cfg.export.metrics_file).read_text())
    assert metrics["AtoB"]["max_abs"] == max(
        r.max_abs for r in res.parity if r.file == "generator_AtoB.onnx"
    )
    assert "generator_BtoA.int8.onnx" in res.summary()


def test_parity_rows_are_recomputable_and_cover_sizes_and_sources(
    exported: tuple[Config, ExportResult],
) -> None:
    cfg, res = exported
    fp32 = [r for r in res.parity if r.precision == "fp32"]
    seen = {(r.direction, r.source, r.height, r.width) for r in fp32}
    assert seen == {
        (d, s, h, w)
        for d in ("AtoB", "BtoA")
        for s in ("random", "real")
        for h, w in [(32, 32), (37, 27)]
    }
    assert all(r.gate == "max" and r.max_abs <= 1e-3 and r.mean_abs <= r.max_abs for r in fp32)
    # recompute one row by hand: same inputs, PyTorch vs ONNX Runtime
    _, _, g_ba = load_generators(res.checkpoint)
    source, x = parity_inputs(cfg, "B")[2]  # the second size, random batch
    assert source == "random" and x.shape == (2, 3, 37, 27)
    with torch.no_grad():
        ref = g_ba(torch.from_numpy(x)).numpy()
    got = OnnxGenerator(res.files["BtoA"])(x)
    row = next(r for r in fp32 if (r.direction, r.source, r.height) == ("BtoA", "random", 37))
    assert row.max_abs == pytest.approx(float(np.abs(got - ref).max()), rel=1e-6)
    assert row.mean_abs == pytest.approx(float(np.abs(got - ref).mean()), rel=1e-6)


def test_onnx_matches_pytorch_at_unseen_odd_sizes_and_batch(
    exported: tuple[Config, ExportResult],
) -> None:
    _, res = exported
    _, g_ab, g_ba = load_generators(res.checkpoint)
    x = torch.rand(3, 3, 27, 45, generator=torch.Generator().manual_seed(1)) * 2 - 1
    outs = {}
    for direction, net in (("AtoB", g_ab), ("BtoA", g_ba)):
        with torch.no_grad():
            ref = net(x).numpy()
        outs[direction] = OnnxGenerator(res.files[direction])(x)
        assert outs[direction].shape == (3, 3, 27, 45)
        assert np.abs(outs[direction] - ref).max() < 1e-4
    # the second direction reuses the first one's graph: it must carry its own weights
    assert np.abs(outs["AtoB"] - outs["BtoA"]).mean() > 0.05


def test_fp16_and_int8_variants_report_their_own_cost(
    exported: tuple[Config, ExportResult],
) -> None:
    _, res = exported
    for direction in ("AtoB", "BtoA"):
        fp32, fp16, int8 = (
            res.sizes[k] for k in (direction, f"{direction}.fp16", f"{direction}.int8")
        )
        assert fp16 < 0.7 * fp32 and int8 < 0.5 * fp32
        for key, precision in (
            (f"{direction}.fp16", "fp16"),
            (f"{direction}.int8", "int8-dynamic"),
        ):
            gen = OnnxGenerator(res.files[key])
            assert gen.precision == precision and gen.input_dtype == np.float32
            rows = [r for r in res.parity if r.file == res.files[key].name]
            assert len(rows) == 4 and all(r.gate == "mean" for r in rows)
        err16 = max(r.mean_abs for r in res.parity if r.file.endswith(f"{direction}.fp16.onnx"))
        err8 = max(r.mean_abs for r in res.parity if r.file.endswith(f"{direction}.int8.onnx"))
        assert 0 < err16 < 0.01 and err16 < err8 < 0.05


def test_failed_gate_leaves_previous_export_untouched(
    exported: tuple[Config, ExportResult], tmp_path: Path
) -> None:
    cfg, res = exported
    out = tmp_path / "onnx"
    out.mkdir()
    (out / "generator_AtoB.onnx").write_bytes(b"previous good export")
    strict = dataclasses.replace(
        cfg, export=dataclasses.replace(cfg.export, tolerance=1e-12, fp16=False, int8=False)
    )
    with pytest.raises(ExportError) as e:
        export(strict, checkpoint=res.checkpoint, out_dir=out)
    msg = str(e.value)
    assert msg.startswith(
        "parity gate failed for generator_AtoB.onnx: max |ONNX Runtime - PyTorch| = "
    )
    assert msg.endswith(
        "input exceeds export.tolerance=1e-12; no files were written. Check for ops exported in "
        "training mode or a different opset, or raise export.tolerance if this is expected"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["onnx"]  # no staging folder left
    assert [p.name for p in out.iterdir()] == ["generator_AtoB.onnx"]
    assert (out / "generator_AtoB.onnx").read_bytes() == b"previous good export"


def test_default_checkpoint_prefers_best_then_last(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path)
    folder = Path(cfg.train.out_dir) / "checkpoints"
    with pytest.raises(ExportError) as e:
        default_checkpoint(cfg)
    assert str(e.value) == (
        f"no checkpoint to export: neither {folder / 'best.pt'} nor {folder / 'last.pt'} exists. "
        "Train first (`cyclegan train`) or pass --checkpoint PATH"
    )
    folder.mkdir(parents=True)
    (folder / "last.pt").write_bytes(b"x")
    assert default_checkpoint(cfg) == folder / "last.pt"
    (folder / "best.pt").write_bytes(b"x")
    assert default_checkpoint(cfg) == folder / "best.pt"


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path)
    path = make_checkpoint(cfg, tmp_path / "m.pt")
    state = torch.load(path, weights_only=True)
    unet = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, generator="unet_128"))
    state["config"] = unet.to_dict()  # U-Net config, ResNet weights
    save_checkpoint(path, state)
    with pytest.raises(CheckpointError) as e:
        export(cfg, checkpoint=path)
    assert str(e.value) == (
        f"checkpoint {path} nets.G_AB (generator 'unet_128') does not match the network it is "
        "loaded into: missing keys [model.model.0.bias, model.model.0.weight, "
        "model.model.1.model.1.bias, model.model.1.model.1.weight, "
        "model.model.1.model.3.model.1.bias (+23 more)]; unexpected keys [model.1.bias, "
        "model.1.weight, model.10.conv_block.1.bias, model.10.conv_block.1.weight, "
        "model.10.conv_block.5.bias (+31 more)]"
    )
    assert not Path(cfg.export.out_dir).exists()


def test_cli_export_reports_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"train: {{out_dir: {tmp_path / 'run'}}}\ntracking: {{enabled: false}}\n")
    missing = tmp_path / "nope.pt"
    assert main(["export", "--params", str(params), "--checkpoint", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"error: checkpoint {missing} not found"
    assert main(["export", "--params", str(params)]) == 2
    assert "no checkpoint to export" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wrapped_training_mode_net_exports_in_eval_mode(tmp_path: Path) -> None:
    """DDP inside torch.compile, BatchNorm with running stats and dropout, left in train mode."""
    torch.manual_seed(0)
    net = build_generator(ModelConfig(ngf=4, norm="batch", dropout=True))
    with torch.no_grad():
        for _ in range(3):  # move the running stats away from batch statistics
            net(torch.rand(4, 3, 32, 32) * 3 + 0.5)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    try:
        wrapped: Any = torch.compile(torch.nn.parallel.DistributedDataParallel(net))
        assert unwrap(wrapped) is net
        path = tmp_path / "g.onnx"
        export_onnx(wrapped, path, 20, {"direction": "AtoB"})  # opset is a parameter
    finally:
        torch.distributed.destroy_process_group()
    assert net.training  # the caller's mode is restored
    x = torch.rand(2, 3, 36, 28) * 2 - 1
    with torch.no_grad():
        ref = net.eval()(x).numpy()
        train_out = net.train()(x).numpy()
    got = OnnxGenerator(path)(x)
    assert np.abs(got - ref).max() < 1e-4
    assert np.abs(got - train_out).max() > 1e-2  # batch statistics would have been wrong
    proto = onnx.load(str(path))
    assert {o.domain: o.version for o in proto.opset_import}[""] == 20
    nodes = proto.graph.node
    assert "Dropout" not in {n.op_type for n in nodes}  # eval: dropout is the identity
    assert not [a for n in nodes for a in n.attribute if a.name == "training_mode" and a.i]


def test_parity_sizes_need_a_non_square_shape() -> None:
    from cyclegan.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError) as e:
        config_from_dict({"export": {"parity_sizes": [[32, 32], [64, 64]]}})
    assert str(e.value) == (
        "export.parity_sizes: needs a non-square [height, width] (odd shapes are where exports "
        "break), got [[32, 32], [64, 64]]"
    )


def test_static_int8_is_calibrated_qlinearconv(
    exported: tuple[Config, ExportResult], tmp_path: Path
) -> None:
    cfg, res = exported
    inputs = parity_inputs(cfg, "A")
    real = [x for source, x in inputs if source == "real"]
    path = tmp_path / "static.onnx"
    quantize_int8(res.files["AtoB"], path, "static", real, limit=3)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "QLinearConv" in ops and "ConvInteger" not in ops
    dynamic = {n.op_type for n in onnx.load(str(res.files["AtoB.int8"])).graph.node}
    assert "ConvInteger" in dynamic and "QLinearConv" not in dynamic
    x = real[0]
    err = np.abs(OnnxGenerator(path)(x) - OnnxGenerator(res.files["AtoB"])(x)).mean()
    assert 0 < err < 0.1


@pytest.mark.parametrize("name", ["resnet_9blocks_ds", "resnet_9blocks_attn"])
def test_new_generators_export_with_parity_at_any_size(name: str, tmp_path: Path) -> None:
    """Dynamic H×W: the attention's HW×HW matrix and the depthwise convs trace symbolically."""
    torch.manual_seed(0)
    net = build_generator(ModelConfig(generator=name, ngf=4))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # gamma too: the attention is really used
    path = tmp_path / "g.onnx"
    export_onnx(net, path, 18, {"direction": "AtoB"})
    gen = OnnxGenerator(path)
    for h, w in [(32, 32), (36, 52), (27, 45)]:
        x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h)) * 2 - 1
        with torch.no_grad():
            ref = net.eval()(x).numpy()
        got = gen(x)
        assert got.shape == (2, 3, h, w)
        assert np.abs(got - ref).max() < 1e-4
