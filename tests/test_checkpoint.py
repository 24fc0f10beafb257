"""Checkpoint files: atomic round-trip, weights_only, torn files, rotation, generator loading."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from cyclegan.config import Config, ModelConfig
from cyclegan.models import build_discriminator, build_generator
from cyclegan.training.checkpoint import (
    CheckpointError,
    clean_state_dict,
    latest_checkpoint,
    link_as,
    load_checkpoint,
    load_generators,
    load_net_state,
    rotate_checkpoints,
    save_checkpoint,
    step_filename,
)

TINY = Config(model=ModelConfig(ngf=4, ndf=4))


def _state(cfg: Config = TINY, step: int = 7) -> dict[str, Any]:
    torch.manual_seed(step)
    nets = {
        "G_AB": build_generator(cfg.model),
        "G_BA": build_generator(cfg.model),
        "D_A": build_discriminator(cfg.model),
        "D_B": build_discriminator(cfg.model),
    }
    opt = torch.optim.Adam(nets["G_AB"].parameters(), lr=1e-3)
    nets["G_AB"](torch.zeros(1, 3, 16, 16)).mean().backward()
    opt.step()
    return {
        "config": cfg.to_dict(),
        "step": step,
        "nets": {k: v.state_dict() for k, v in nets.items()},
        "optimizers": {"G": opt.state_dict()},
        "schedulers": {},
        "scaler": None,
        "pools": {
            "A": {"images": [torch.ones(3, 4, 4)], "generator": torch.Generator().get_state()}
        },
        "rng": {"torch": torch.get_rng_state(), "python": (3, (1, 2, 3), None)},
        "metrics": {"loss_G": 1.5},
        "versions": {"torch": str(torch.__version__)},
    }


def _assert_same(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert a == b


def test_round_trip_is_exact_and_leaves_no_temp_files(tmp_path: Path) -> None:
    state = _state()
    path = save_checkpoint(tmp_path / "ck" / step_filename(7), state)
    assert path.name == "step_00000007.pt"
    _assert_same(state, load_checkpoint(path))
    assert [p.name for p in path.parent.iterdir()] == ["step_00000007.pt"]


def test_overwrite_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(step=1))
    save_checkpoint(path, _state(step=2))
    assert load_checkpoint(path)["step"] == 2


class Opaque:
    pass


def test_pickle_only_objects_are_refused_at_save(tmp_path: Path) -> None:
    state = _state()
    state["metrics"] = {"history": [1.0, Opaque()]}
    path = tmp_path / "x.pt"
    with pytest.raises(
        CheckpointError, match=r"checkpoint state state\.metrics\.history\[1\] is a"
    ):
        save_checkpoint(path, state)
    assert not path.exists() and not list(tmp_path.iterdir())
    state["metrics"] = {}
    state["versions"]["torch"] = torch.__version__  # a str subclass torch.load refuses
    with pytest.raises(CheckpointError, match=r"state\.versions\.torch is a torch\.torch_version"):
        save_checkpoint(path, state)


def test_pickle_only_objects_are_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"config": {}, "step": 0, "nets": {}, "x": Opaque()}, path)
    with pytest.raises(
        CheckpointError, match=r"contains objects that weights_only loading refuses"
    ):
        load_checkpoint(path)


def test_missing_non_checkpoint_and_wrong_dict(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"^checkpoint .*nope\.pt not found$"):
        load_checkpoint(tmp_path / "nope.pt")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.pt is not a PyTorch checkpoint file"):
        load_checkpoint(text)
    tensor = tmp_path / "t.pt"
    torch.save(torch.ones(2), tensor)
    with pytest.raises(CheckpointError, match=r"t\.pt is not a CycleGAN checkpoint: it holds a"):
        load_checkpoint(tensor)
    partial = tmp_path / "p.pt"
    torch.save({"step": 1}, partial)
    with pytest.raises(CheckpointError, match=r"no \['config', 'nets'\] keys"):
        load_checkpoint(partial)


def test_torn_file_is_detected_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for step in (100, 200, 300):
        save_checkpoint(tmp_path / step_filename(step), _state(step=step))
    newest = tmp_path / step_filename(300)
    size = newest.stat().st_size
    with open(newest, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(CheckpointError, match=r"step_00000300\.pt is corrupt or truncated: "):
        load_checkpoint(newest)
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(tmp_path) == tmp_path / step_filename(200)
    assert "skipping unreadable checkpoint" in caplog.text and "step_00000300.pt" in caplog.text
    newest.write_bytes(b"")  # a zero-byte file (crash before the first write) is torn, too
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(newest)


def test_latest_checkpoint_orders_by_step_not_name(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "absent") is None
    assert latest_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path / "step_900.pt", _state(step=900))
    save_checkpoint(tmp_path / "step_00001000.pt", _state(step=1000))
    save_checkpoint(tmp_path / "last.pt", _state(step=5000))
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00001000.pt"


def test_rotation_keeps_last_k_and_best_last(tmp_path: Path) -> None:
    small = {"config": {}, "step": 0, "nets": {}}
    for step in (1, 2, 3, 4, 5):
        save_checkpoint(tmp_path / step_filename(step), {**small, "step": step})
    for name in ("best.pt", "last.pt"):
        save_checkpoint(tmp_path / name, small)
    removed = rotate_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in removed) == [step_filename(s) for s in (1, 2, 3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.pt",
        "last.pt",
        step_filename(4),
        step_filename(5),
    ]
    with pytest.raises(ValueError, match="keep_last must be >= 1, got 0"):
        rotate_checkpoints(tmp_path, 0)


def test_load_generators_reproduces_outputs(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, generator="unet_128"))
    state = _state(cfg)
    path = save_checkpoint(tmp_path / "best.pt", state)
    loaded_cfg, g_ab, g_ba = load_generators(path)
    assert loaded_cfg == cfg
    assert not g_ab.training and not g_ba.training
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    for name, net in (("G_AB", g_ab), ("G_BA", g_ba)):
        ref = build_generator(cfg.model)
        ref.load_state_dict(state["nets"][name])
        assert torch.equal(net(x), ref.eval()(x))
    assert not torch.equal(g_ab(x), g_ba(x))


def test_wrapped_prefixes_are_stripped(tmp_path: Path) -> None:
    state = _state()
    net = build_generator(TINY.model)
    wrapped = {f"module._orig_mod.{k}": v for k, v in state["nets"]["G_AB"].items()}
    assert clean_state_dict(wrapped).keys() == state["nets"]["G_AB"].keys()
    state["nets"]["G_AB"] = wrapped
    state["nets"]["G_BA"] = {f"_orig_mod.{k}": v for k, v in state["nets"]["G_BA"].items()}
    _, g_ab, _ = load_generators(save_checkpoint(tmp_path / "w.pt", state))
    load_net_state(net, wrapped, "test")
    assert all(
        torch.equal(a, b)
        for a, b in zip(net.state_dict().values(), g_ab.state_dict().values(), strict=True)
    )


def test_architecture_mismatch_names_keys(tmp_path: Path) -> None:
    # resnet_6blocks weights (ngf=4) under a resnet_9blocks config: blocks 16-18 and the layers
    # after them are missing; the 6-block upsampling convs at 16/23 are unexpected; index 19 is
    # the second upsampling conv in one and the first in the other (8->4 vs 16->8 channels).
    state = _state()
    cfg9 = dataclasses.replace(
        TINY, model=dataclasses.replace(TINY.model, generator="resnet_9blocks")
    )
    state["config"] = cfg9.to_dict()
    path = save_checkpoint(tmp_path / "m.pt", state)
    with pytest.raises(CheckpointError) as e:
        load_generators(path)
    assert str(e.value) == (
        f"checkpoint {path} nets.G_AB (generator 'resnet_9blocks') does not match the network it "
        "is loaded into: missing keys [model.16.conv_block.1.bias, model.16.conv_block.1.weight, "
        "model.16.conv_block.5.bias, model.16.conv_block.5.weight, "
        "model.17.conv_block.1.bias (+11 more)]; unexpected keys [model.16.bias, model.16.weight, "
        "model.23.bias, model.23.weight]; shape mismatches [model.19.bias: checkpoint (4,) vs "
        "model (8,), model.19.weight: checkpoint (8, 4, 3, 3) vs model (16, 8, 3, 3)]"
    )


def test_wider_net_gives_shape_mismatch(tmp_path: Path) -> None:
    state = _state()
    wide = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, ngf=8))
    state["config"] = wide.to_dict()
    path = save_checkpoint(tmp_path / "m.pt", state)
    with pytest.raises(
        CheckpointError,
        match=r"shape mismatches \[model\.1\.bias: checkpoint \(4,\) "
        r"vs model \(8,\), model\.1\.weight: checkpoint \(4, 3, 7, 7\)",
    ):
        load_generators(path)


def test_unknown_architecture_and_bad_config(tmp_path: Path) -> None:
    state = _state()
    state["config"]["model"]["generator"] = "vit_huge"
    path = save_checkpoint(tmp_path / "u.pt", state)
    with pytest.raises(CheckpointError) as e:
        load_generators(path)
    assert str(e.value) == (
        f"checkpoint {path}: its config is invalid: model.generator: unknown generator 'vit_huge' "
        "(valid: resnet_6blocks, resnet_9blocks, resnet_9blocks_attn, resnet_9blocks_ds, "
        "unet_128, unet_256)"
    )
    state["config"]["model"]["generator"] = "resnet_6blocks"
    state["config"]["model"]["ngf"] = -1
    save_checkpoint(path, state)
    with pytest.raises(CheckpointError, match=r"its config is invalid: model\.ngf: must be >= 1"):
        load_generators(path)
    del state["nets"]["G_BA"]
    state["config"]["model"]["ngf"] = 4
    save_checkpoint(path, state)
    with pytest.raises(CheckpointError, match=r"u\.pt has no nets\.G_BA$"):
        load_generators(path)


def test_failed_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "last.pt", _state(step=1))

    def boom(*_a: Any, **_k: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _state(step=2))
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_nn_parameter_values_are_allowed(tmp_path: Path) -> None:
    p = nn.Parameter(torch.ones(2))
    state = {"config": {}, "step": 0, "nets": {"x": {"w": p}}, "d": torch.float16, "s": {1, 2}}
    loaded = load_checkpoint(save_checkpoint(tmp_path / "p.pt", state))
    assert torch.equal(loaded["nets"]["x"]["w"], torch.ones(2)) and loaded["d"] is torch.float16


def test_link_as_survives_rotation_and_overwrite(tmp_path: Path) -> None:
    small = {"config": {}, "nets": {}}
    for step in (1, 2):
        save_checkpoint(tmp_path / step_filename(step), {**small, "step": step})
    link_as(tmp_path / step_filename(1), tmp_path / "best.pt")
    link_as(tmp_path / step_filename(1), tmp_path / "last.pt")
    link_as(tmp_path / step_filename(2), tmp_path / "last.pt")  # replaces, never appends
    rotate_checkpoints(tmp_path, keep_last=1)
    assert not (tmp_path / step_filename(1)).exists()
    assert load_checkpoint(tmp_path / "best.pt")["step"] == 1
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2
    save_checkpoint(tmp_path / step_filename(2), {**small, "step": 3})  # new inode, link kept
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt", step_filename(2)]
    with pytest.raises(
        CheckpointError, match=r"step_00000001\.pt not found \(cannot link it as best"
    ):
        link_as(tmp_path / step_filename(1), tmp_path / "best.pt")
