"""import-checkpoint: published generator layouts (reference, MMagic) -> our checkpoints.

The published files cannot be downloaded here, so the tests build state dicts with their exact
key names and shapes (random values) from minimal re-implementations of the two source
architectures, written for these tests from the public code: the reference ResnetGenerator
(junyanz/pytorch-CycleGAN-and-pix2pix models/networks.py) and MMagic's ResnetGenerator
(mmcv ConvModules: optional explicit padding layer, ``conv``, norm ``bn``/``in``, activation).
An imported generator must compute exactly what those networks compute with the same weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cyclegan.cli import main
from cyclegan.import_checkpoint import import_checkpoint
from cyclegan.training.checkpoint import load_checkpoint, load_generators
from tests.export_utils import make_processed, tiny_cfg, write_image

# --- the reference architecture (pytorch-CycleGAN-and-pix2pix) ----------------------------


def _ref_norm(norm: str, c: int) -> list[nn.Module]:
    if norm == "batch":
        return [nn.BatchNorm2d(c)]
    if norm == "instance":
        return [nn.InstanceNorm2d(c)]  # affine=False, track_running_stats=False
    return [nn.Identity()]


class RefBlock(nn.Module):
    def __init__(self, c: int, norm: str, dropout: bool, bias: bool) -> None:
        super().__init__()
        seq: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3, bias=bias)]
        seq += [*_ref_norm(norm, c), nn.ReLU(True)] + ([nn.Dropout(0.5)] if dropout else [])
        seq += [nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3, bias=bias), *_ref_norm(norm, c)]
        self.conv_block = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class RefResnet(nn.Module):
    """The reference ResnetGenerator (reflect padding); bias only with instance norm."""

    def __init__(self, ngf: int, n_blocks: int, norm: str = "instance", dropout: bool = False):
        super().__init__()
        bias = norm == "instance"
        seq: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7, bias=bias)]
        seq += [*_ref_norm(norm, ngf), nn.ReLU(True)]
        for m in (1, 2):
            seq += [nn.Conv2d(ngf * m, ngf * m * 2, 3, 2, 1, bias=bias)]
            seq += [*_ref_norm(norm, ngf * m * 2), nn.ReLU(True)]
        seq += [RefBlock(ngf * 4, norm, dropout, bias) for _ in range(n_blocks)]
        for m in (4, 2):
            seq += [nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, 2, 1, 1, bias=bias)]
            seq += [*_ref_norm(norm, ngf * m // 2), nn.ReLU(True)]
        seq += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class RefUnetLevel(nn.Module):
    """One reference UnetSkipConnectionBlock (instance norm: convs with bias, except the
    outermost up-conv which always has one)."""

    def __init__(self, outer: int, inner: int, sub: nn.Module | None, in_nc: int | None = None):
        super().__init__()
        self.outermost = in_nc is not None
        down = nn.Conv2d(in_nc or outer, inner, 4, 2, 1)
        up_in = inner if sub is None else inner * 2
        up = nn.ConvTranspose2d(up_in, outer, 4, 2, 1)
        if self.outermost:
            seq = [down, sub, nn.ReLU(True), up, nn.Tanh()]
        elif sub is None:
            seq = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up, nn.InstanceNorm2d(outer)]
        else:
            seq = [nn.LeakyReLU(0.2, True), down, nn.InstanceNorm2d(inner), sub]
            seq += [nn.ReLU(True), up, nn.InstanceNorm2d(outer)]
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class RefUnet(nn.Module):
    def __init__(self, num_downs: int, ngf: int) -> None:
        super().__init__()
        block = RefUnetLevel(ngf * 8, ngf * 8, None)
        for _ in range(num_downs - 5):
            block = RefUnetLevel(ngf * 8, ngf * 8, block)
        for outer, inner in ((4, 8), (2, 4), (1, 2)):
            block = RefUnetLevel(ngf * outer, ngf * inner, block)
        self.model = RefUnetLevel(3, ngf, block, in_nc=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# --- MMagic's architecture (ConvModule = [padding_layer] conv [bn|in] [activate]) ----------


class ConvModule(nn.Module):
    def __init__(self, conv: nn.Module, norm: str | None, act: nn.Module | None, pad: int = 0):
        super().__init__()
        self.padding_layer = nn.ReflectionPad2d(pad) if pad else None
        self.conv = conv
        self.norm_name = {"batch": "bn", "instance": "in", None: None}[norm]
        if norm:
            c = conv.out_channels
            layer = nn.BatchNorm2d(c) if norm == "batch" else nn.InstanceNorm2d(c)
            self.add_module(self.norm_name, layer)
        self.activate = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.padding_layer(x) if self.padding_layer is not None else x
        x = self.conv(x)
        x = getattr(self, self.norm_name)(x) if self.norm_name else x
        return self.activate(x) if self.activate is not None else x


class MMBlock(nn.Module):
    def __init__(self, c: int, norm: str, dropout: bool) -> None:
        super().__init__()
        bias = norm == "instance"
        seq: list[nn.Module] = [ConvModule(nn.Conv2d(c, c, 3, bias=bias), norm, nn.ReLU(), 1)]
        seq += [nn.Dropout(0.5)] if dropout else []
        seq += [ConvModule(nn.Conv2d(c, c, 3, bias=bias), norm, None, 1)]
        self.block = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class MMResnet(nn.Module):
    def __init__(self, ngf: int, n_blocks: int, norm: str = "instance", dropout: bool = False):
        super().__init__()
        bias, relu = norm == "instance", nn.ReLU
        seq: list[nn.Module] = [ConvModule(nn.Conv2d(3, ngf, 7, bias=bias), norm, relu(), 3)]
        for m in (1, 2):
            conv = nn.Conv2d(ngf * m, ngf * m * 2, 3, 2, 1, bias=bias)
            seq.append(ConvModule(conv, norm, relu()))
        seq += [MMBlock(ngf * 4, norm, dropout) for _ in range(n_blocks)]
        for m in (4, 2):
            conv = nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, 2, 1, 1, bias=bias)
            seq.append(ConvModule(conv, norm, relu()))
        seq.append(ConvModule(nn.Conv2d(ngf, 3, 7), None, nn.Tanh(), 3))
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Boom:
    """Stands for mmengine's objects in a checkpoint's meta; must never be instantiated."""

    def __init__(self) -> None:
        self.history = [1.0, 2.0]  # a state, so unpickling would call __setstate__

    def __setstate__(self, state: object) -> None:
        raise AssertionError("code from the checkpoint ran")


def _randomised(net: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.is_floating_point():
                noise = torch.randn(t.shape, generator=g) * 0.2
                t.copy_(noise.abs() + 0.5 if name.endswith("running_var") else noise)
    return net.eval()


def _x(h: int = 36, w: int = 44) -> torch.Tensor:
    return torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(7)) * 2 - 1


def _save(obj: object, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


# --- tests ----------------------------------------------------------------------------


def test_published_shapes_map_onto_resnet_9blocks(tmp_path: Path) -> None:
    """A full-size published file (ngf 64, 9 blocks, instance norm): every key of the real
    layout maps, the config is inferred, 11.4 M parameters; the PyTorch 0.3-era InstanceNorm
    running statistics are dropped and reported."""
    sd = RefResnet(64, 9).state_dict()
    assert len(sd) == 2 * (3 + 2 * 9 + 2 + 1)  # weight+bias per conv, no norm state
    legacy = {**sd, "model.2.running_mean": torch.zeros(64), "model.2.running_var": torch.ones(64)}
    _save(legacy, tmp_path / "horse2zebra_pretrained" / "latest_net_G.pth")
    res = import_checkpoint(
        [str(tmp_path / "horse2zebra_pretrained")], tmp_path / "h2z.pt", "reference"
    )
    m = res.model
    assert (m.generator, m.ngf, m.norm, m.dropout, m.input_nc, m.output_nc) == (
        "resnet_9blocks",
        64,
        "instance",
        False,
        3,
        3,
    )
    assert len(res.mapped["G_AB"]) == len(sd) and res.untrained == ["G_BA"]
    assert [d.split(": ", 1)[1] for d in res.dropped] == [
        "model.2.running_mean (InstanceNorm running statistic; unused)",
        "model.2.running_var (InstanceNorm running statistic; unused)",
    ]
    state = load_checkpoint(tmp_path / "h2z.pt")
    assert sum(v.numel() for v in state["nets"]["G_AB"].values()) == 11_378_179
    assert all(torch.equal(state["nets"]["G_AB"][k], v) for k, v in sd.items())
    assert state["imported"]["untrained"] == ["G_BA"]
    assert "warning: G_BA is freshly initialised" in res.summary()


@pytest.mark.parametrize(
    "norm,dropout,n_blocks", [("instance", False, 6), ("batch", True, 9), ("none", False, 6)]
)
def test_reference_pair_computes_exactly_the_reference(
    tmp_path: Path, norm: str, dropout: bool, n_blocks: int
) -> None:
    ref_a, ref_b = (_randomised(RefResnet(4, n_blocks, norm, dropout), s) for s in (1, 2))
    _save(ref_a.state_dict(), tmp_path / "run" / "latest_net_G_A.pth")
    _save(ref_b.state_dict(), tmp_path / "run" / "latest_net_G_B.pth")
    _save({"model.0.weight": torch.zeros(1)}, tmp_path / "run" / "latest_net_D_A.pth")
    res = import_checkpoint([str(tmp_path / "run")], tmp_path / "m.pt", "reference")
    assert res.dropped[0] == f"{tmp_path / 'run' / 'latest_net_D_A.pth'} (not a generator file)"
    assert (res.model.norm, res.model.dropout) == (norm, dropout)
    assert res.model.generator == f"resnet_{n_blocks}blocks"
    _, g_ab, g_ba = load_generators(tmp_path / "m.pt")
    x = _x()
    with torch.no_grad():
        assert torch.equal(g_ab(x), ref_a(x)) and torch.equal(g_ba(x), ref_b(x))
    assert not torch.equal(g_ab(x), g_ba(x))
    if norm == "none":  # the reference has no conv bias there; ours gets zeros
        assert res.filled and all("= 0" in f for f in res.filled)


def test_reference_unet_computes_exactly_the_reference(tmp_path: Path) -> None:
    ref = _randomised(RefUnet(7, 2), 8)
    _save(ref.state_dict(), tmp_path / "latest_net_G.pth")
    res = import_checkpoint(
        [str(tmp_path / "latest_net_G.pth")], tmp_path / "u.pt", "reference", direction="BtoA"
    )
    assert (res.model.generator, res.model.ngf, res.model.norm) == ("unet_128", 2, "instance")
    assert res.untrained == ["G_AB"]
    _, _, g_ba = load_generators(tmp_path / "u.pt")
    x = _x(128, 128)
    with torch.no_grad():
        assert torch.equal(g_ba(x), ref(x))


def test_mmagic_checkpoint_computes_exactly_mmagic(tmp_path: Path) -> None:
    """generators.<target domain>: 'zebra' maps horse (A) -> zebra (B). The mmengine meta holds
    a foreign object: it is read inertly, never instantiated."""
    horse, zebra = _randomised(MMResnet(4, 9), 3), _randomised(MMResnet(4, 9), 4)
    sd = {f"generators.horse.{k}": v for k, v in horse.state_dict().items()}
    sd.update({f"generators.zebra.{k}": v for k, v in zebra.state_dict().items()})
    assert "generators.zebra.model.3.block.1.conv.weight" in sd  # the real layout
    assert sd["generators.zebra.model.12.conv.weight"].shape == (16, 8, 3, 3)  # deconv
    sd["discriminators.zebra.model.0.conv.weight"] = torch.zeros(4, 3, 4, 4)
    _save({"meta": {"hub": Boom(), "iter": 270000}, "state_dict": sd}, tmp_path / "iter.pth")
    res = import_checkpoint([str(tmp_path / "iter.pth")], tmp_path / "mm.pt", "mmagic")
    assert res.model.generator == "resnet_9blocks" and res.model.ngf == 4
    assert len(res.mapped["G_AB"]) == len(res.mapped["G_BA"]) == len(horse.state_dict())
    assert res.dropped == [f"{tmp_path / 'iter.pth'}: 1 discriminators.* keys (not a generator)"]
    _, g_ab, g_ba = load_generators(tmp_path / "mm.pt")
    x = _x()
    with torch.no_grad():
        assert torch.equal(g_ab(x), zebra(x)) and torch.equal(g_ba(x), horse(x))
    # explicit domains swap the directions; MMEditing 0.x 'a'/'b' means a: A->B
    import_checkpoint(
        [str(tmp_path / "iter.pth")], tmp_path / "sw.pt", "mmagic", domains=("zebra", "horse")
    )
    _, sw_ab, _ = load_generators(tmp_path / "sw.pt")
    with torch.no_grad():
        assert torch.equal(sw_ab(x), horse(x))


def test_mmagic_batch_norm_and_dropout_blocks(tmp_path: Path) -> None:
    a, b = (
        _randomised(MMResnet(4, 6, "batch", True), 5),
        _randomised(MMResnet(4, 6, "batch", True), 6),
    )
    sd = {f"generators.a.{k}": v for k, v in a.state_dict().items()}
    sd.update({f"generators.b.{k}": v for k, v in b.state_dict().items()})
    assert "generators.a.model.3.block.2.bn.running_var" in sd  # Dropout is block.1
    _save({"state_dict": sd}, tmp_path / "old.pth")
    res = import_checkpoint([str(tmp_path / "old.pth")], tmp_path / "o.pt", "mmagic")
    assert (res.model.generator, res.model.norm, res.model.dropout) == (
        "resnet_6blocks",
        "batch",
        True,
    )
    _, g_ab, g_ba = load_generators(tmp_path / "o.pt")
    x = _x()
    with torch.no_grad():
        assert torch.equal(g_ab(x), a(x)) and torch.equal(g_ba(x), b(x))


def test_bad_inputs_exit_2_with_what_and_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def err(*args: str) -> str:
        assert main(["import-checkpoint", *args]) == 2
        return capsys.readouterr().err.strip()

    out = str(tmp_path / "o.pt")
    assert err(str(tmp_path / "nope"), out).startswith(
        f"error: checkpoint source not found: '{tmp_path / 'nope'}' is not an existing file"
    )
    sd = RefResnet(4, 6).state_dict()
    sd["model.10.conv_block.5.weight"] = torch.zeros(16, 16, 1, 1)
    f = _save(sd, tmp_path / "latest_net_G_A.pth")
    assert err(str(f), out) == (
        f"error: {f}: the weights do not fit resnet_6blocks: missing [], unexpected [], shape "
        "mismatches ['model.10.conv_block.5.weight: source (16, 16, 1, 1) vs resnet_6blocks "
        "(16, 16, 3, 3)']"
    )
    msg = err(str(f), out, "--format", "mmagic")
    assert msg.startswith("error: mmagic format: expected two generators under 'generators.")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert "not a readable PyTorch checkpoint" in err(str(tmp_path / "junk.pth"), out)
    # an unreachable URL: the same offline message as `data import`
    assert "cannot download http://127.0.0.1:9/horse2zebra.pth" in err(
        "http://127.0.0.1:9/horse2zebra.pth", out
    )
    Path(out).write_bytes(b"mine")
    assert err(str(f), out) == f"error: {out} exists; pass --overwrite to replace it"
    assert Path(out).read_bytes() == b"mine"


def test_s3_source(tmp_path: Path, s3_env: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="models")
    for name, seed in (("latest_net_G_A.pth", 1), ("latest_net_G_B.pth", 2)):
        f = _save(_randomised(RefResnet(4, 6), seed).state_dict(), tmp_path / name)
        s3.upload_file(str(f), "models", f"h2z/{name}")
    res = import_checkpoint(["s3://models/h2z/"], tmp_path / "s3.pt", "reference")
    assert sorted(res.mapped) == ["G_AB", "G_BA"] and not res.untrained


def test_imported_model_exports_and_translates(tmp_path: Path) -> None:
    """Imported -> ONNX export (parity-gated) -> translate; the ONNX output matches the
    original reference network on the same image."""
    from cyclegan.export import export
    from cyclegan.translate import translate

    ref_a = _randomised(RefResnet(4, 6), 11)
    f = _save(ref_a.state_dict(), tmp_path / "latest_net_G.pth")
    cfg = tiny_cfg(tmp_path)
    make_processed(Path(cfg.data.processed_dir))
    ckpt = tmp_path / "imported.pt"
    assert main(["import-checkpoint", str(f), str(ckpt)]) == 0
    res = export(cfg, checkpoint=ckpt)
    img = write_image(tmp_path / "in" / "x.png", (40, 32))
    out = translate(tmp_path / "in", tmp_path / "out", model=res.out_dir)
    assert not out.failed
    from PIL import Image

    got = np.asarray(Image.open(tmp_path / "out" / "x.png"))
    x = torch.from_numpy(np.array(Image.open(img))).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        want = ((ref_a(x)[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255)
    assert np.abs(got.astype(float) - want).max() <= 1  # ONNX Runtime vs PyTorch rounding


def test_imported_model_fine_tunes_with_init_from(tmp_path: Path) -> None:
    """train.init_from: the imported weights plus one fresh-Adam step (|update| <= lr per
    weight); a mismatched architecture is a clear error."""
    from cyclegan.train import train
    from cyclegan.training.checkpoint import CheckpointError
    from tests.train_utils import make_synth
    from tests.train_utils import tiny_cfg as train_cfg

    for name, seed in (("latest_net_G_A.pth", 1), ("latest_net_G_B.pth", 2)):
        _save(_randomised(RefResnet(8, 6), seed).state_dict(), tmp_path / "ref" / name)
    init = tmp_path / "init.pt"
    import_checkpoint([str(tmp_path / "ref")], init, "reference")
    data = make_synth(tmp_path / "data", train=4, test=2)
    cfg = train_cfg(tmp_path, data, train={"steps": 1, "checkpoint_every": 1, "batch_size": 1})
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from=str(init)))
    res = train(cfg)
    after = load_checkpoint(res.last_checkpoint)
    before = load_checkpoint(init)["nets"]
    for net in ("G_AB", "G_BA"):
        diff = max((after["nets"][net][k] - v).abs().max().item() for k, v in before[net].items())
        assert 0 < diff <= cfg.optim.lr * 1.001
    assert after["optimizers"]["G"]["state"][0]["step"].item() == 1  # fresh optimiser
    bad = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, ngf=4),
        train=dataclasses.replace(cfg.train, out_dir=str(tmp_path / "r2")),
    )
    with pytest.raises(CheckpointError) as e:
        train(bad)
    assert str(e.value) == (
        f"train.init_from={init}: the checkpoint's generators are another architecture "
        "(model.ngf: checkpoint 8, this run 4); set those model keys to the checkpoint's values"
    )
