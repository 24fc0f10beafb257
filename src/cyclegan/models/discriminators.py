"""Discriminators: PatchGAN (70×70 at ``n_layers=3``), 1×1 PixelGAN, multiscale PatchGAN."""

from __future__ import annotations

import torch
from torch import nn

from cyclegan.models.generators import _check_input, get_norm_layer


def _with_features(seq: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``seq(x)`` plus every LeakyReLU activation (the layers feature matching compares)."""
    feats = []
    for layer in seq:
        x = layer(x)
        if isinstance(layer, nn.LeakyReLU):
            feats.append(x)
    return x, feats


class NLayerDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` stride-2 4×4 convs, then two stride-1 4×4 convs -> 1 channel."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "instance"):
        super().__init__()
        norm_layer = get_norm_layer(norm)
        use_bias = norm != "batch"
        self.input_nc = input_nc
        # each stride-2 conv floors the size by 2; the two stride-1 convs remove 1 px each,
        # and the last normalised map must keep >= 2 px for instance norm: 3 * 2**n_layers.
        self.min_size = 3 * 2**n_layers
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=use_bias),
                norm_layer(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.input_nc, self.min_size, type(self).__name__)
        return self.model(x)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The same prediction as ``forward`` and the intermediate activations."""
        _check_input(x, self.input_nc, self.min_size, type(self).__name__)
        return _with_features(self.model, x)


class PixelDiscriminator(nn.Module):
    """1×1 PixelGAN: judges each pixel's colour independently."""

    min_size = 2  # instance norm needs more than one pixel

    def __init__(self, input_nc: int, ndf: int = 64, norm: str = "instance"):
        super().__init__()
        norm_layer = get_norm_layer(norm)
        use_bias = norm != "batch"
        self.input_nc = input_nc
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 1, bias=use_bias),
            norm_layer(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, 1, bias=use_bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.input_nc, self.min_size, type(self).__name__)
        return self.net(x)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        _check_input(x, self.input_nc, self.min_size, type(self).__name__)
        return _with_features(self.net, x)


class MultiscaleDiscriminator(nn.Module):
    """``num_scales`` PatchGANs on the image at 1, 1/2, 1/4... resolution (pix2pixHD style).

    Returns a list of patch maps, finest first; ``GANLoss`` averages over them.
    """

    def __init__(
        self,
        input_nc: int,
        ndf: int = 64,
        n_layers: int = 3,
        norm: str = "instance",
        num_scales: int = 2,
    ):
        super().__init__()
        self.input_nc = input_nc
        self.scales = nn.ModuleList(
            NLayerDiscriminator(input_nc, ndf, n_layers, norm) for _ in range(num_scales)
        )
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        # AvgPool(3, s2, p1) maps s -> ceil(s / 2); the coarsest scale needs the PatchGAN minimum.
        self.min_size = (self.scales[0].min_size - 1) * 2 ** (num_scales - 1) + 1

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        _check_input(x, self.input_nc, self.min_size, type(self).__name__)
        outputs = []
        for i, disc in enumerate(self.scales):
            if i > 0:
                x = self.downsample(x)
            outputs.append(disc(x))
        return outputs

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-scale predictions and the activations of every scale, finest first."""
        _check_input(x, self.input_nc, self.min_size, type(self).__name__)
        preds, feats = [], []
        for i, disc in enumerate(self.scales):
            if i > 0:
                x = self.downsample(x)
            pred, f = disc.features(x)
            preds.append(pred)
            feats += f
        return preds, feats
