"""Generators of the reference pytorch-CycleGAN-and-pix2pix: ResNet and U-Net.

Both families accept any input size: an input whose sides are not a multiple of the network's
native multiple (4 for ResNet, ``2**num_downs`` for U-Net) is replicate-padded up to one and the
output is cropped back, so ``N×C×H×W`` always maps to ``N×C×H×W``. At a native size (the usual
case, e.g. 256 px for ``unet_256``) the padding is empty and the network is exactly the
reference. This is what lets ``unet_256`` run on the 64 px default data (it is padded to 256).
One deliberate difference: with ``norm: none`` convs keep their bias (the reference drops it,
leaving those layers with neither bias nor norm).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

NormFactory = Callable[[int], nn.Module]
NORMS = ("instance", "batch", "none")


def get_norm_layer(norm: str) -> NormFactory:
    """Norm factory as in the reference (instance: no affine, no running stats)."""
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "none":
        return lambda _channels: nn.Identity()
    raise ValueError(f"model.norm: unknown norm {norm!r} (valid: {', '.join(NORMS)})")


def _tracing() -> bool:
    """True while torch.compile / torch.export / ONNX export trace the forward (no checks)."""
    return bool(torch.compiler.is_compiling() or torch.jit.is_tracing())


def _check_input(x: torch.Tensor, channels: int, min_size: int, what: str) -> None:
    if _tracing():
        return
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{what}: expected input N×{channels}×H×W, got {tuple(x.shape)}")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(
            f"{what}: input {x.shape[-2]}×{x.shape[-1]} is too small; "
            f"both sides must be >= {min_size} px"
        )


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad H and W up to a multiple (always called, so traced graphs stay general)."""
    h, w = x.shape[-2], x.shape[-1]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    top, left = pad_h // 2, pad_w // 2
    return F.pad(x, (left, pad_w - left, top, pad_h - top), mode="replicate")


def _crop_center(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    top, left = (y.shape[-2] - h) // 2, (y.shape[-1] - w) // 2
    return y[..., top : top + h, left : left + w]


class ResnetBlock(nn.Module):
    """Conv-norm-ReLU-(dropout)-conv-norm with a residual connection; reflection padding."""

    def __init__(self, dim: int, norm_layer: NormFactory, use_dropout: bool, use_bias: bool):
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, bias=use_bias),
            norm_layer(dim),
            nn.ReLU(True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, bias=use_bias),
            norm_layer(dim),
        ]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, two stride-2 downsamplings, ``n_blocks`` residual blocks, two upsamplings."""

    size_multiple = 4
    min_size = 8  # the 1/4-scale feature map must stay >= 2 px for the reflection padding

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        ngf: int = 64,
        norm: str = "instance",
        use_dropout: bool = False,
        n_blocks: int = 6,
        block: Callable[..., nn.Module] | None = None,
        bottleneck: Callable[[int], nn.Module] | None = None,
    ):
        """``block`` replaces the residual block class, ``bottleneck(channels)`` adds a module
        after the residual blocks (both default to the reference network)."""
        super().__init__()
        self.input_nc = input_nc
        block = block or ResnetBlock
        norm_layer = get_norm_layer(norm)
        use_bias = norm != "batch"  # a norm with affine shift makes the conv bias redundant
        model: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
            norm_layer(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            mult = 2**i
            model += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=use_bias),
                norm_layer(ngf * mult * 2),
                nn.ReLU(True),
            ]
        model += [block(ngf * 4, norm_layer, use_dropout, use_bias) for _ in range(n_blocks)]
        if bottleneck is not None:
            model.append(bottleneck(ngf * 4))
        for i in range(2):
            mult = 2 ** (2 - i)
            model += [
                nn.ConvTranspose2d(
                    ngf * mult,
                    ngf * mult // 2,
                    3,
                    stride=2,
                    padding=1,
                    output_padding=1,
                    bias=use_bias,
                ),
                norm_layer(ngf * mult // 2),
                nn.ReLU(True),
            ]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.input_nc, self.min_size, type(self).__name__)
        h, w = x.shape[-2], x.shape[-1]
        y = self.model(_pad_to_multiple(x, self.size_multiple))
        return _crop_center(y, h, w)


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: down, the inner levels, up, concatenated with the input (skip)."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm_layer: NormFactory = nn.BatchNorm2d,
        use_dropout: bool = False,
        use_bias: bool = False,
    ):
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=use_bias)
        downrelu, downnorm = nn.LeakyReLU(0.2, True), norm_layer(inner_nc)
        uprelu, upnorm = nn.ReLU(True), norm_layer(outer_nc)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:  # no norm on the 1×1 bottleneck (as in the reference)
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(
                inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=use_bias
            )
            model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            if use_dropout:
                model.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*[m for m in model if m is not None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net with ``num_downs`` stride-2 levels (7 -> 128 px bottleneck 1×1, 8 -> 256 px)."""

    min_size = 1

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        num_downs: int,
        ngf: int = 64,
        norm: str = "instance",
        use_dropout: bool = False,
    ):
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"UnetGenerator: num_downs must be >= 5, got {num_downs}")
        self.input_nc = input_nc
        self.size_multiple = 2**num_downs
        norm_layer = get_norm_layer(norm)
        use_bias = norm != "batch"
        block = UnetSkipConnectionBlock(
            ngf * 8, ngf * 8, norm_layer=norm_layer, innermost=True, use_bias=use_bias
        )
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(
                ngf * 8,
                ngf * 8,
                submodule=block,
                norm_layer=norm_layer,
                use_dropout=use_dropout,
                use_bias=use_bias,
            )
        for outer, inner in ((4, 8), (2, 4), (1, 2)):
            block = UnetSkipConnectionBlock(
                ngf * outer,
                ngf * inner,
                submodule=block,
                norm_layer=norm_layer,
                use_bias=use_bias,
            )
        self.model = UnetSkipConnectionBlock(
            output_nc,
            ngf,
            input_nc=input_nc,
            submodule=block,
            outermost=True,
            norm_layer=norm_layer,
            use_bias=use_bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.input_nc, self.min_size, type(self).__name__)
        h, w = x.shape[-2], x.shape[-1]
        y = self.model(_pad_to_multiple(x, self.size_multiple))
        return _crop_center(y, h, w)
