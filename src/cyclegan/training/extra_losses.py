"""Optional generator losses (``loss.lambda_ssim``, ``lambda_fft``, ``lambda_fm``,
``lambda_perceptual``); each is computed only when its weight is > 0.

* SSIM (Wang et al. 2004; 11×11 Gaussian window, sigma 1.5, on [0, 1] images): ``1 - SSIM``
  between a cycle reconstruction and its input -- the structure-preserving term of the
  medical-imaging CycleGAN recipes.
* FFT: L1 between the amplitude spectra ``|rfft2|`` (orthonormal) of reconstruction and input,
  which penalises lost high-frequency detail that pixel L1 averages away.
* Feature matching (pix2pixHD): L1 between the discriminator's intermediate activations on
  fake and (detached) real images, averaged over layers and scales.
* Perceptual: VGG16 (ImageNet, torchvision layout) relu1_2/relu2_2/relu3_3 features of a
  translation against its input (content) plus the L1 between each translation's Gram
  matrices and the real target batch's mean Gram matrices (style, Gatys et al.).
  The weights are resolved like the evaluation's (``cyclegan.weightfiles``): never
  downloaded unless ``loss.vgg_download`` is true.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cyclegan.weightfiles import (
    WeightsError,
    WeightSpec,
    load_state_dict_file,
    resolve_weights,
)

VGG16 = WeightSpec(
    what="VGG16 ImageNet weights for the perceptual loss (torchvision vgg16)",
    filename="vgg16-397923af.pth",
    url="https://download.pytorch.org/models/vgg16-397923af.pth",
    param="loss.vgg_weights",
    download_param="loss.vgg_download",
)
# torchvision vgg16 ``features`` indices: relu1_2 = 3, relu2_2 = 8, relu3_3 = 15
VGG_LAYERS = (3, 8, 15)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _gaussian_window(size: int, sigma: float, channels: int, like: Tensor) -> Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=like.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM of two ``N×C×H×W`` images in [-1, 1], computed as the evaluation's
    torchmetrics SSIM (reflect-padded, so every pixel counts; a smaller window on tiny images)."""
    x, y = (x.float() + 1) / 2, (y.float() + 1) / 2
    size = min(window, x.shape[-2], x.shape[-1]) // 2 * 2 + 1
    size = min(size, 2 * min(x.shape[-2:]) - 1)
    w = _gaussian_window(size, sigma, x.shape[1], x)
    pad = (size - 1) // 2

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.pad(t, (pad, pad, pad, pad), mode="reflect"), w, groups=x.shape[1])

    mu_x, mu_y = blur(x), blur(y)
    var_x = (blur(x * x) - mu_x**2).clamp_min(0)
    var_y = (blur(y * y) - mu_y**2).clamp_min(0)
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    return (num / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))).mean()


def ssim_loss(x: Tensor, y: Tensor) -> Tensor:
    return 1 - ssim(x, y)


def fft_loss(x: Tensor, y: Tensor) -> Tensor:
    """L1 between the orthonormal 2-D amplitude spectra of ``x`` and ``y``."""
    fx = torch.fft.rfft2(x.float(), norm="ortho").abs()
    fy = torch.fft.rfft2(y.float(), norm="ortho").abs()
    return F.l1_loss(fx, fy)


def feature_matching_loss(fake: list[Tensor], real: list[Tensor]) -> Tensor:
    """Mean over layers of L1(fake features, real features); real ones carry no gradient."""
    if len(fake) != len(real) or not fake:
        raise ValueError(f"feature matching: {len(fake)} fake vs {len(real)} real feature maps")
    losses = [F.l1_loss(f.float(), r.detach().float()) for f, r in zip(fake, real, strict=True)]
    return torch.stack(losses).mean()


def gram(f: Tensor) -> Tensor:
    """``N×C×C`` Gram matrices normalised by ``C·H·W``."""
    n, c, h, w = f.shape
    flat = f.float().reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def vgg16_features(explicit: str = "", download: bool = False) -> nn.Sequential:
    """torchvision's vgg16 ``features`` up to relu3_3 with resolved ImageNet weights, frozen.

    Only the ``features.*`` entries of the file are used (the classifier is not needed).
    """
    from torchvision.models.vgg import cfgs, make_layers

    resolved = resolve_weights(VGG16, explicit, download)
    sd = load_state_dict_file(resolved)
    full = make_layers(cfgs["D"])
    want = {f"features.{k}": v for k, v in full.state_dict().items()}
    missing = [k for k in want if k not in sd]
    wrong = [k for k in want if k in sd and sd[k].shape != want[k].shape]
    if missing or wrong:
        raise WeightsError(
            f"{resolved.path}: not {VGG16.what} ({len(missing)} missing keys {missing[:3]}, "
            f"{len(wrong)} wrong shapes {wrong[:3]}). Expected {VGG16.filename}."
        )
    full.load_state_dict({k[len("features.") :]: sd[k] for k in want})
    net = nn.Sequential(*list(full.children())[: max(VGG_LAYERS) + 1]).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class PerceptualLoss(nn.Module):
    """Content (VGG features of translation vs input) + style (Gram vs the target batch)."""

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def _taps(self, x: Tensor) -> list[Tensor]:
        x = ((x.float() + 1) / 2 - self.mean) / self.std
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in VGG_LAYERS:
                taps.append(x)
        return taps

    def forward(self, fake: Tensor, content: Tensor, style: Tensor) -> Tensor:
        if fake.shape[1] != 3:
            raise ValueError(
                f"loss.lambda_perceptual needs RGB images, got {fake.shape[1]} channels"
            )
        f = self._taps(fake)
        with torch.no_grad():
            c, s = self._taps(content), self._taps(style)
        content_l = torch.stack([F.l1_loss(a, b) for a, b in zip(f, c, strict=True)]).mean()
        style_l = torch.stack(
            [
                F.l1_loss(gram(a), gram(b).mean(0, keepdim=True).expand(a.shape[0], -1, -1))
                for a, b in zip(f, s, strict=True)
            ]
        ).mean()
        return content_l + style_l
