"""Image -> tensor transforms built from ``params.yaml`` (the reference CycleGAN's recipe).

Training: resize to ``load_size`` (square), random crop to ``crop_size``, horizontal flip with
``flip_prob``, optional colour jitter. Evaluation: one deterministic resize. Both end in a
``CHW float32`` tensor in ``[-1, 1]``, the range the tanh generators produce. Randomness comes
from torch's RNG, which the trainer seeds (and DataLoader seeds per worker).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from cyclegan.config import TransformConfig

Transform = Callable[[Image.Image], torch.Tensor]


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


def train_transform(cfg: TransformConfig) -> Transform:
    """Random augmentation for training, parameterised by ``cfg.transforms``."""
    steps: list[Callable] = [
        T.Resize((cfg.load_size, cfg.load_size), interpolation=T.InterpolationMode.BICUBIC)
    ]
    if cfg.crop_size < cfg.load_size:
        steps.append(T.RandomCrop(cfg.crop_size))
    if cfg.flip_prob > 0:
        steps.append(T.RandomHorizontalFlip(cfg.flip_prob))
    if cfg.color_jitter > 0:
        s = cfg.color_jitter
        steps.append(T.ColorJitter(brightness=s, contrast=s, saturation=s))
    steps.append(to_tensor)
    return T.Compose(steps)


def eval_transform(size: int) -> Transform:
    """Deterministic: resize to ``size`` x ``size`` (no crop, no flip), then to ``[-1, 1]``."""
    if size < 1:
        raise ValueError(f"eval_transform: size must be >= 1, got {size}")
    resize = T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC)
    return T.Compose([resize, to_tensor])
