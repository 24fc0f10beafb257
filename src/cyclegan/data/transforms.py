"""Image -> tensor transforms built from ``params.yaml`` (the reference CycleGAN's recipe).

Training: resize to ``load_size`` (square), random crop to ``crop_size``, horizontal flip with
``flip_prob``, optional colour jitter. Evaluation: one deterministic resize. Both end in a
``CHW float32`` tensor in ``[-1, 1]``, the range the tanh generators produce. Randomness comes
from torch's RNG, which the trainer seeds (and DataLoader seeds per worker).

RGB and grey images go through the same Pillow operations; ``H×W×C`` arrays of other channel
counts (multispectral) become tensors first and use torchvision's tensor ops (bicubic with
antialiasing, clamped back to ``[-1, 1]``). Colour jitter needs RGB (config refuses otherwise).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from cyclegan.config import TransformConfig
from cyclegan.data.io import Pixels

Transform = Callable[[Pixels], torch.Tensor]


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> ``3xHxW float32`` in ``[-1, 1]`` (0 -> -1, 255 -> 1)."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous() / 127.5 - 1.0


def to_image(tensor: torch.Tensor) -> Image.Image:
    """``3xHxW`` tensor in ``[-1, 1]`` -> RGB PIL image (values outside the range are clipped)."""
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ValueError(f"expected a 3xHxW tensor, got shape {tuple(tensor.shape)}")
    arr = ((tensor.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return Image.fromarray(arr.permute(1, 2, 0).numpy(), mode="RGB")


def pixels_to_tensor(img: Pixels) -> torch.Tensor:
    """Loaded pixels of any channel count -> ``C×H×W float32`` in ``[-1, 1]``."""
    if isinstance(img, Image.Image) and img.mode != "L":
        return to_tensor(img)
    arr = np.asarray(img, dtype=np.float32)
    arr = arr[..., None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous() / 127.5 - 1.0


def display_rgb(x: torch.Tensor) -> torch.Tensor:
    """``N×C×H×W`` -> 3 channels for pictures: grey repeated, bands 1-3 as R, G, B otherwise."""
    c = x.shape[1]
    if c == 3:
        return x
    return x[:, [i % c for i in range(3)]] if c < 3 else x[:, :3]


def _clamp(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-1.0, 1.0)


def _resize(size: int, channels: int) -> Callable:
    bicubic = T.InterpolationMode.BICUBIC
    if channels in (1, 3):
        return T.Resize((size, size), interpolation=bicubic)
    return T.Resize((size, size), interpolation=bicubic, antialias=True)


def train_transform(
    cfg: TransformConfig, channels: int = 3, load_size: int = 0, crop_size: int = 0
) -> Transform:
    """Random augmentation for training, parameterised by ``cfg.transforms``.

    ``load_size``/``crop_size`` override the config's (one progressive-resizing stage).
    """
    load, crop = load_size or cfg.load_size, crop_size or cfg.crop_size
    pil = channels in (1, 3)
    steps: list[Callable] = [] if pil else [pixels_to_tensor]
    steps.append(_resize(load, channels))
    if crop < load:
        steps.append(T.RandomCrop(crop))
    if cfg.flip_prob > 0:
        steps.append(T.RandomHorizontalFlip(cfg.flip_prob))
    if cfg.color_jitter > 0:
        s = cfg.color_jitter
        steps.append(T.ColorJitter(brightness=s, contrast=s, saturation=s))
    steps.append(to_tensor if channels == 3 else pixels_to_tensor if pil else _clamp)
    return T.Compose(steps)


def eval_transform(size: int, channels: int = 3) -> Transform:
    """Deterministic: resize to ``size`` x ``size`` (no crop, no flip), then to ``[-1, 1]``."""
    if size < 1:
        raise ValueError(f"eval_transform: size must be >= 1, got {size}")
    if channels == 3:
        return T.Compose([_resize(size, 3), to_tensor])
    if channels == 1:
        return T.Compose([_resize(size, 1), pixels_to_tensor])
    return T.Compose([pixels_to_tensor, _resize(size, channels), _clamp])
