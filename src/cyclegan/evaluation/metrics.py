"""Weight-free per-image metrics (L1, PSNR, SSIM) on images in the generators' ``[-1, 1]`` range.

Every function returns one value per image so that bootstrap intervals can be drawn over images.
Images are mapped to ``[0, 1]`` first, so L1 is the mean absolute error as a fraction of the full
intensity range and PSNR/SSIM use ``data_range=1``. Inputs are checked, never silently clipped:
an image outside the declared range means a pipeline bug (e.g. ``[0, 1]`` data fed as ``[-1, 1]``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from cyclegan.evaluation.errors import EvalError

RANGE_TOL = 1e-3  # float noise allowed outside [-1, 1] (tanh in fp16, ONNX)
PSNR_MAX_DB = 100.0  # identical images: PSNR is capped here instead of +inf (keeps means finite)
SSIM_KERNEL = 11  # torchmetrics' Gaussian window; images must be at least this large
HIGHER_IS_BETTER: dict[str, bool] = {
    "l1": False,
    "psnr": True,
    "ssim": True,
    "lpips": False,
    "acc": True,
    "fid": False,
    "kid": False,
}


def check_images(
    x: object,
    name: str,
    value_range: tuple[float, float] = (-1.0, 1.0),
    min_size: int = 1,
    rgb: bool = False,
) -> Tensor:
    """Return ``x`` if it is a finite ``N×C×H×W`` float batch inside ``value_range``; else raise.

    ``rgb=True`` also requires C = 3 (metrics built on RGB networks: FID/KID, LPIPS).
    """
    lo, hi = value_range
    if not isinstance(x, Tensor):
        raise EvalError(f"{name}: expected a torch.Tensor of images, got {type(x).__name__}")
    if x.ndim != 4 or (rgb and x.shape[1] != 3):
        shape = "N×3×H×W (RGB)" if rgb else "N×C×H×W"
        raise EvalError(f"{name}: expected images shaped {shape}, got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise EvalError(f"{name}: the batch is empty (no images to score)")
    if not x.is_floating_point():
        raise EvalError(
            f"{name}: expected float images in [{lo:g}, {hi:g}], got dtype {x.dtype} "
            "(convert uint8 with x / 127.5 - 1)"
        )
    if not bool(torch.isfinite(x).all()):
        raise EvalError(f"{name}: contains NaN or inf values (a diverged generator?)")
    xmin, xmax = float(x.min()), float(x.max())
    if xmin < lo - RANGE_TOL or xmax > hi + RANGE_TOL:
        raise EvalError(
            f"{name}: values must lie in [{lo:g}, {hi:g}], got [{xmin:.3f}, {xmax:.3f}] "
            "(images in [0, 1] must be mapped with x * 2 - 1; [0, 255] with x / 127.5 - 1)"
        )
    h, w = x.shape[-2:]
    if min(h, w) < min_size:
        raise EvalError(f"{name}: images must be at least {min_size}×{min_size} px, got {h}×{w}")
    return x


def check_pair(
    a: Tensor, b: Tensor, names: tuple[str, str], min_size: int = 1, rgb: bool = False
) -> None:
    """Both batches valid and the same shape (metrics compare image ``i`` with image ``i``)."""
    check_images(a, names[0], min_size=min_size, rgb=rgb)
    check_images(b, names[1], min_size=min_size, rgb=rgb)
    if a.shape != b.shape:
        raise EvalError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)} (resize both with eval_transform(size))"
        )


def to_unit(x: Tensor) -> Tensor:
    """``[-1, 1]`` -> ``[0, 1]`` (float64 so per-image sums are exact enough for tests)."""
    return ((x.double() + 1.0) / 2.0).clamp(0.0, 1.0)


def to_uint8(x: Tensor) -> Tensor:
    """``[-1, 1]`` float -> ``uint8`` ``[0, 255]``, the FID/KID protocol's input type."""
    check_images(x, "images", rgb=True)
    return ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


def l1(a: Tensor, b: Tensor) -> Tensor:
    """Per-image mean absolute error on the ``[0, 1]`` scale."""
    check_pair(a, b, ("l1 input", "l1 reference"))
    return (to_unit(a) - to_unit(b)).abs().mean(dim=(1, 2, 3))


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Per-image PSNR in dB with ``data_range=1``; identical images give ``PSNR_MAX_DB``."""
    check_pair(a, b, ("psnr input", "psnr reference"))
    mse = (to_unit(a) - to_unit(b)).square().mean(dim=(1, 2, 3))
    floor = 10.0 ** (-PSNR_MAX_DB / 10.0)
    return -10.0 * torch.log10(mse.clamp_min(floor))


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Per-image SSIM (torchmetrics: Gaussian 11×11, sigma 1.5, ``data_range=1``)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    check_pair(a, b, ("ssim input", "ssim reference"), min_size=SSIM_KERNEL)
    out = structural_similarity_index_measure(
        to_unit(a).float(), to_unit(b).float(), data_range=1.0, reduction="none"
    )
    return out.double().reshape(-1)


def as_rgb(x: Tensor) -> Tensor | None:
    """For RGB-only networks (Inception, LPIPS): grey repeated to RGB; other counts: None."""
    if x.shape[1] == 3:
        return x
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else None
