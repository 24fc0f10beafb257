"""Networks by registry name (``cfg.model.generator`` / ``cfg.model.discriminator``).

``build_generator`` / ``build_discriminator`` construct a network and initialise it as the
reference does (conv weights ~ N(0, init_gain), BatchNorm weight ~ N(1, init_gain), biases 0),
so construction is deterministic under ``torch.manual_seed``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from cyclegan.config import ModelConfig
from cyclegan.models.discriminators import (
    MultiscaleDiscriminator,
    NLayerDiscriminator,
    PixelDiscriminator,
)
from cyclegan.models.generators import ResnetGenerator, UnetGenerator, get_norm_layer
from cyclegan.models.variants import DepthwiseSeparableResnetBlock, SelfAttention

__all__ = [
    "DISCRIMINATORS",
    "GENERATORS",
    "build_discriminator",
    "build_generator",
    "generator_size_multiple",
    "get_norm_layer",
    "init_weights",
]

GeneratorBuilder = Callable[[ModelConfig], nn.Module]
DiscriminatorBuilder = Callable[[ModelConfig, int], nn.Module]

GENERATORS: dict[str, GeneratorBuilder] = {
    "resnet_6blocks": lambda m: ResnetGenerator(
        m.input_nc, m.output_nc, m.ngf, m.norm, m.dropout, n_blocks=6
    ),
    "resnet_9blocks": lambda m: ResnetGenerator(
        m.input_nc, m.output_nc, m.ngf, m.norm, m.dropout, n_blocks=9
    ),
    "resnet_9blocks_ds": lambda m: ResnetGenerator(
        m.input_nc,
        m.output_nc,
        m.ngf,
        m.norm,
        m.dropout,
        n_blocks=9,
        block=DepthwiseSeparableResnetBlock,
    ),
    "resnet_9blocks_attn": lambda m: ResnetGenerator(
        m.input_nc, m.output_nc, m.ngf, m.norm, m.dropout, n_blocks=9, bottleneck=SelfAttention
    ),
    "unet_128": lambda m: UnetGenerator(m.input_nc, m.output_nc, 7, m.ngf, m.norm, m.dropout),
    "unet_256": lambda m: UnetGenerator(m.input_nc, m.output_nc, 8, m.ngf, m.norm, m.dropout),
}

_SIZE_MULTIPLES = {
    "resnet_6blocks": 4,
    "resnet_9blocks": 4,
    "resnet_9blocks_ds": 4,
    "resnet_9blocks_attn": 4,
    "unet_128": 2**7,
    "unet_256": 2**8,
}


def _patchgan(m: ModelConfig, nc: int) -> nn.Module:
    return NLayerDiscriminator(nc, m.ndf, m.n_layers_d, m.norm)


DISCRIMINATORS: dict[str, DiscriminatorBuilder] = {
    "patchgan": _patchgan,
    "patchgan_70": lambda m, nc: NLayerDiscriminator(nc, m.ndf, 3, m.norm),
    "pixel": lambda m, nc: PixelDiscriminator(nc, m.ndf, m.norm),
    "multiscale": lambda m, nc: MultiscaleDiscriminator(
        nc, m.ndf, m.n_layers_d, m.norm, m.num_scales
    ),
}


def _unknown(kind: str, name: str, valid: dict[str, object]) -> ValueError:
    return ValueError(f"model.{kind}: unknown {kind} {name!r} (valid: {', '.join(sorted(valid))})")


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """The reference 'normal' init: conv/linear ~ N(0, gain), BatchNorm weight ~ N(1, gain)."""

    def init(m: nn.Module) -> None:
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    net.apply(init)
    return net


def build_generator(mcfg: ModelConfig) -> nn.Module:
    """``cfg.model.generator`` -> an initialised generator (N×input_nc×H×W -> N×output_nc×H×W)."""
    if mcfg.generator not in GENERATORS:
        raise _unknown("generator", mcfg.generator, GENERATORS)
    return init_weights(GENERATORS[mcfg.generator](mcfg), mcfg.init_gain)


def build_discriminator(mcfg: ModelConfig, input_nc: int | None = None) -> nn.Module:
    """``cfg.model.discriminator`` -> an initialised discriminator.

    ``input_nc`` is the channel count of the domain it judges; it defaults to
    ``mcfg.output_nc`` (the discriminator of G_AB's outputs); pass ``mcfg.input_nc`` for the
    other one.
    """
    if mcfg.discriminator not in DISCRIMINATORS:
        raise _unknown("discriminator", mcfg.discriminator, DISCRIMINATORS)
    nc = mcfg.output_nc if input_nc is None else input_nc
    return init_weights(DISCRIMINATORS[mcfg.discriminator](mcfg, nc), mcfg.init_gain)


def generator_size_multiple(mcfg: ModelConfig | str) -> int:
    """The native size multiple (4 for ResNet, 2**num_downs for U-Net).

    Inputs of other sizes still work (they are padded inside the generator and cropped back),
    but at a multiple of this no padding happens and the output matches the reference exactly.
    """
    name = mcfg if isinstance(mcfg, str) else mcfg.generator
    if name not in _SIZE_MULTIPLES:
        raise _unknown("generator", name, GENERATORS)
    return _SIZE_MULTIPLES[name]


def reverse_model(mcfg: ModelConfig) -> ModelConfig:
    """G_BA's config: B (``output_nc`` channels) -> A (``input_nc`` channels)."""
    from dataclasses import replace

    return replace(mcfg, input_nc=mcfg.output_nc, output_nc=mcfg.input_nc)
