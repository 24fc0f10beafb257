"""Every registered network: shapes, finiteness, gradients, init statistics, determinism."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from cyclegan.config import ModelConfig
from cyclegan.models import (
    DISCRIMINATORS,
    GENERATORS,
    build_discriminator,
    build_generator,
    generator_size_multiple,
    init_weights,
)
from cyclegan.models.variants import DepthwiseSeparableResnetBlock, SelfAttention

TINY = ModelConfig(ngf=8, ndf=8)

# 64 px through the PatchGAN: 4x4 stride-2 convs floor-halve (64->32->16->8), the two stride-1
# 4x4 convs remove one pixel each (8->7->6). The second multiscale level sees 32 px: 32->...->2.
D_SHAPES = {
    "patchgan": [(1, 1, 6, 6)],
    "patchgan_70": [(1, 1, 6, 6)],
    "pixel": [(1, 1, 64, 64)],
    "multiscale": [(1, 1, 6, 6), (1, 1, 2, 2)],
}


def _image(n: int = 1, c: int = 3, h: int = 64, w: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g) * 2 - 1


def _outputs(y: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return y if isinstance(y, list) else [y]


def _assert_all_grads(net: nn.Module, outputs: list[torch.Tensor]) -> None:
    target_gen = torch.Generator().manual_seed(2)
    loss = sum(((o - torch.randn(o.shape, generator=target_gen)) ** 2).mean() for o in outputs)
    loss.backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not no_grad, f"parameters without gradient: {no_grad}"


def _conv_weights(net: nn.Module) -> torch.Tensor:
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    return torch.cat([m.weight.detach().flatten() for m in convs])


def _open_attention(net: nn.Module) -> nn.Module:
    """SAGAN starts with gamma = 0 (attention off, so no gradient reaches q/k/v); open it as
    one training step would, so every parameter must then receive a gradient."""
    for m in net.modules():
        if isinstance(m, SelfAttention):
            with torch.no_grad():
                m.gamma.fill_(0.5)
    return net


def test_registries_hold_the_documented_names() -> None:
    assert sorted(GENERATORS) == [
        "resnet_6blocks",
        "resnet_9blocks",
        "resnet_9blocks_attn",
        "resnet_9blocks_ds",
        "unet_128",
        "unet_256",
    ]
    assert sorted(DISCRIMINATORS) == ["multiscale", "patchgan", "patchgan_70", "pixel"]


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_shape_range_and_gradients(name: str) -> None:
    net = _open_attention(build_generator(dataclasses.replace(TINY, generator=name)))
    y = net(_image())
    assert y.shape == (1, 3, 64, 64)
    assert torch.isfinite(y).all()
    assert y.abs().max() <= 1.0  # tanh
    _assert_all_grads(net, [y])


@pytest.mark.parametrize("name", sorted(DISCRIMINATORS))
def test_discriminator_shapes_and_gradients(name: str) -> None:
    net = build_discriminator(dataclasses.replace(TINY, discriminator=name))
    outs = _outputs(net(_image()))
    assert [tuple(o.shape) for o in outs] == D_SHAPES[name]
    assert all(torch.isfinite(o).all() for o in outs)
    _assert_all_grads(net, outs)


@pytest.mark.parametrize(
    "kind,name",
    [("G", n) for n in sorted(GENERATORS)] + [("D", n) for n in sorted(DISCRIMINATORS)],
)
def test_init_statistics_and_seeded_construction(kind: str, name: str) -> None:
    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        if kind == "G":
            return build_generator(dataclasses.replace(TINY, generator=name))
        return build_discriminator(dataclasses.replace(TINY, discriminator=name))

    net = build(0)
    w = _conv_weights(net)
    assert abs(w.std().item() - 0.02) < 0.002
    assert abs(w.mean().item()) < 0.002
    biases = [m.bias for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    assert all((b == 0).all() for b in biases if b is not None)
    same, other = build(0).state_dict(), build(1).state_dict()
    assert all(torch.equal(v, same[k]) for k, v in net.state_dict().items())
    assert not all(torch.equal(v, other[k]) for k, v in net.state_dict().items())


def test_batch_norm_init_and_init_gain() -> None:
    torch.manual_seed(0)
    mcfg = dataclasses.replace(TINY, generator="resnet_9blocks", norm="batch", init_gain=0.05)
    net = build_generator(mcfg)
    bn = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    gamma = torch.cat([m.weight.detach() for m in bn])
    assert abs(gamma.mean().item() - 1.0) < 0.01 and abs(gamma.std().item() - 0.05) < 0.01
    assert all((m.bias == 0).all() for m in bn)
    assert abs(_conv_weights(net).std().item() - 0.05) < 0.005
    y = net(_image(n=2))  # batch statistics in train mode, running statistics in eval mode
    assert y.shape == (2, 3, 64, 64)
    assert net.eval()(_image(n=1)).shape == (1, 3, 64, 64)


def test_instance_norm_has_no_state() -> None:
    """affine=False, track_running_stats=False: nothing but conv weights in the state dict."""
    net = build_generator(TINY)
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(not m.affine and not m.track_running_stats for m in norms)
    assert all(k.endswith((".weight", ".bias")) for k in net.state_dict())


def test_init_weights_resets_a_module() -> None:
    torch.manual_seed(0)
    lin = init_weights(nn.Sequential(nn.Linear(400, 300)), gain=0.1)
    assert abs(lin[0].weight.std().item() - 0.1) < 0.005
    assert (lin[0].bias == 0).all()


@pytest.mark.parametrize("name", ["resnet_6blocks", "unet_128"])
def test_native_sizes_are_the_reference_network(name: str) -> None:
    """At a multiple of the native size the padding is empty: output == the bare network."""
    net = build_generator(dataclasses.replace(TINY, generator=name)).eval()
    size = max(64, generator_size_multiple(name))
    x = _image(h=size, w=size)
    inner = net.model
    assert torch.equal(net(x), inner(x))


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generators_keep_odd_sizes(name: str) -> None:
    net = build_generator(dataclasses.replace(TINY, generator=name)).eval()
    assert net(_image(n=2, h=66, w=50)).shape == (2, 3, 66, 50)


def test_channel_counts_and_discriminator_input_override() -> None:
    mcfg = dataclasses.replace(TINY, input_nc=1, output_nc=3)
    g = build_generator(mcfg)
    assert g(_image(c=1)).shape == (1, 3, 64, 64)
    assert build_discriminator(mcfg)(_image(c=3)).shape == (1, 1, 6, 6)
    assert build_discriminator(mcfg, input_nc=1)(_image(c=1)).shape == (1, 1, 6, 6)
    with pytest.raises(ValueError, match=r"ResnetGenerator: expected input N×1×H×W, got \(1, 3"):
        g(_image(c=3))


def test_too_small_inputs_are_clear_errors() -> None:
    g = build_generator(TINY)
    msg = "ResnetGenerator: input 4×64 is too small; both sides must be >= 8 px"
    with pytest.raises(ValueError, match=msg):
        g(_image(h=4))
    assert g(_image(h=8, w=8)).shape == (1, 3, 8, 8)
    d = build_discriminator(TINY)
    msg = "NLayerDiscriminator: input 23×64 is too small; both sides must be >= 24 px"
    with pytest.raises(ValueError, match=msg):
        d(_image(h=23))
    assert d(_image(h=24, w=24)).shape == (1, 1, 1, 1)
    ms = build_discriminator(dataclasses.replace(TINY, discriminator="multiscale"))
    with pytest.raises(ValueError, match="both sides must be >= 47 px"):
        ms(_image(h=46))
    assert [o.shape[-1] for o in ms(_image(h=47, w=47))] == [3, 1]


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ValueError) as e:
        build_generator(dataclasses.replace(TINY, generator="resnet_7blocks"))
    assert str(e.value) == (
        "model.generator: unknown generator 'resnet_7blocks' "
        "(valid: resnet_6blocks, resnet_9blocks, resnet_9blocks_attn, resnet_9blocks_ds, "
        "unet_128, unet_256)"
    )
    with pytest.raises(ValueError) as e:
        build_discriminator(dataclasses.replace(TINY, discriminator="stylegan"))
    assert str(e.value) == (
        "model.discriminator: unknown discriminator 'stylegan' "
        "(valid: multiscale, patchgan, patchgan_70, pixel)"
    )


def test_generator_size_multiple() -> None:
    assert [generator_size_multiple(n) for n in sorted(GENERATORS)] == [4, 4, 4, 4, 128, 256]
    assert generator_size_multiple(dataclasses.replace(TINY, generator="unet_128")) == 128
    with pytest.raises(ValueError, match="unknown generator 'vit'"):
        generator_size_multiple("vit")


def test_patchgan_depth_and_dropout() -> None:
    d4 = build_discriminator(dataclasses.replace(TINY, n_layers_d=4))
    assert d4(_image()).shape == (1, 1, 2, 2)  # 64->32->16->8->4, then 3, 2
    torch.manual_seed(0)
    g = build_generator(dataclasses.replace(TINY, dropout=True))
    assert any(isinstance(m, nn.Dropout) for m in g.modules())
    x = _image()
    g.eval()
    assert torch.equal(g(x), g(x))
    g.train()
    assert not torch.equal(g(x), g(x))


def _n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_depthwise_separable_blocks_by_the_numbers() -> None:
    """Every residual 3×3 conv is a depthwise 3×3 + pointwise 1×1: 9C + C² (+ 2C bias)
    weights instead of 9C² (+ C) -- the rest of the network is unchanged."""
    mcfg = dataclasses.replace(TINY, ngf=16)
    full = build_generator(dataclasses.replace(mcfg, generator="resnet_9blocks"))
    ds = build_generator(dataclasses.replace(mcfg, generator="resnet_9blocks_ds"))
    blocks = [m for m in ds.modules() if isinstance(m, DepthwiseSeparableResnetBlock)]
    assert len(blocks) == 9
    c = 64  # ngf * 4 at the bottleneck
    per_conv_full, per_conv_ds = 9 * c * c + c, (9 * c + c) + (c * c + c)
    assert _n_params(full) - _n_params(ds) == 9 * 2 * (per_conv_full - per_conv_ds)
    depthwise = [m for m in ds.modules() if isinstance(m, nn.Conv2d) and m.groups == c]
    assert len(depthwise) == 18 and all(m.weight.shape == (c, 1, 3, 3) for m in depthwise)


def test_attention_starts_as_the_plain_resnet() -> None:
    """gamma = 0 at init: with the same weights, exactly resnet_9blocks' output; opened, the
    attention changes it."""
    torch.manual_seed(0)
    attn = build_generator(dataclasses.replace(TINY, generator="resnet_9blocks_attn")).eval()
    plain = build_generator(dataclasses.replace(TINY, generator="resnet_9blocks")).eval()
    renamed = {}  # the attention is model.19; the upsampling layers come one index later
    for k, v in attn.state_dict().items():
        idx = int(k.split(".")[1])
        if idx != 19:
            renamed[k if idx < 19 else k.replace(f"model.{idx}.", f"model.{idx - 1}.", 1)] = v
    plain.load_state_dict(renamed, strict=True)
    x = _image(h=32, w=48)
    with torch.no_grad():
        assert torch.equal(attn(x), plain(x))
        _open_attention(attn)
        assert (attn(x) - plain(x)).abs().max() > 1e-4
