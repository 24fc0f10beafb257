"""Generator variants from the CycleGAN literature, built on the reference ResNet generator.

* ``DepthwiseSeparableResnetBlock``: each 3×3 convolution of a residual block becomes a
  depthwise 3×3 (one filter per channel) followed by a pointwise 1×1 (MobileNet style), which
  cuts the block's weights from ``9·C²`` to ``9·C + C²`` per convolution (≈8× at C=256).
* ``SelfAttention``: a SAGAN self-attention block (query/key at C/8 channels, value at C,
  softmax over all H·W positions, residual scaled by a learned ``gamma`` that starts at 0, so
  an initialised network computes exactly the plain ResNet). Every shape is taken from the
  input, so the exported ONNX graph takes any H×W.
"""

from __future__ import annotations

import torch
from torch import nn

from cyclegan.models.generators import NormFactory


class DepthwiseSeparableResnetBlock(nn.Module):
    """The reference residual block with depthwise-separable 3×3 convolutions."""

    def __init__(self, dim: int, norm_layer: NormFactory, use_dropout: bool, use_bias: bool):
        super().__init__()

        def sep_conv() -> list[nn.Module]:
            return [
                nn.ReflectionPad2d(1),
                nn.Conv2d(dim, dim, kernel_size=3, groups=dim, bias=use_bias),
                nn.Conv2d(dim, dim, kernel_size=1, bias=use_bias),
                norm_layer(dim),
            ]

        layers = [*sep_conv(), nn.ReLU(True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        self.conv_block = nn.Sequential(*layers, *sep_conv())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class SelfAttention(nn.Module):
    """SAGAN self-attention: ``x + gamma · softmax(q(x)ᵀ k(x)) v(x)`` over all positions."""

    def __init__(self, dim: int):
        super().__init__()
        inner = max(1, dim // 8)
        self.query = nn.Conv2d(dim, inner, 1)
        self.key = nn.Conv2d(dim, inner, 1)
        self.value = nn.Conv2d(dim, dim, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # N × HW × C'
        k = self.key(x).flatten(2)  # N × C' × HW
        attn = torch.softmax(torch.bmm(q, k), dim=-1)  # N × HW × HW, rows sum to 1
        v = self.value(x).flatten(2)  # N × C × HW
        out = torch.bmm(v, attn.transpose(1, 2)).reshape(n, c, h, w)
        return x + self.gamma * out
