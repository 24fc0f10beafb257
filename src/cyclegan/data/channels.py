"""Channel counts per domain and split, and how N-channel pixels are stored.

Domain A has ``model.input_nc`` channels and domain B ``model.output_nc`` (as in the reference
implementation). Ground-truth splits hold the *other* domain's rendering: ``testA_gt`` is testA
in style B, so it has B's channel count. 1- and 3-channel images are stored as PNG (grey / RGB);
any other count as an uncompressed ``H×W×C`` uint8 TIFF (one page, interleaved samples), which
``tifffile`` writes byte-identically for identical pixels, so DVC caches it like the PNGs.
"""

from __future__ import annotations

import io

import numpy as np

from cyclegan.config import ModelConfig

SPLIT_DOMAIN = {
    "trainA": "A",
    "testA": "A",
    "testB_gt": "A",
    "trainB": "B",
    "testB": "B",
    "testA_gt": "B",
}


def domain_channels(model: ModelConfig) -> dict[str, int]:
    """``{"A": model.input_nc, "B": model.output_nc}``."""
    return {"A": model.input_nc, "B": model.output_nc}


def split_channels(model: ModelConfig) -> dict[str, int]:
    """Channel count of every split folder name (``trainA``, ``testA_gt``...)."""
    per_domain = domain_channels(model)
    return {split: per_domain[d] for split, d in SPLIT_DOMAIN.items()}


def file_suffix(channels: int) -> str:
    """``.png`` for grey and RGB, ``.tif`` for any other channel count."""
    return ".png" if channels in (1, 3) else ".tif"


def describe(channels: int) -> str:
    return {1: "grey", 3: "RGB"}.get(channels, f"{channels}-channel")


def tiff_bytes(arr: np.ndarray) -> bytes:
    """An ``H×W×C`` uint8 array as one uncompressed, interleaved TIFF page (deterministic)."""
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, photometric="minisblack", planarconfig="contig", metadata=None)
    return buf.getvalue()
