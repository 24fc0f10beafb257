"""Helpers for the export/translate/serving tests: tiny configs and real checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cyclegan.config import Config, config_from_dict
from cyclegan.models import build_generator
from cyclegan.training.checkpoint import save_checkpoint


def tiny_cfg(tmp: Path, **sections: dict[str, Any]) -> Config:
    """ngf=8 generators, no tracking, everything under ``tmp``; ``sections`` merge over it."""
    raw: dict[str, Any] = {
        "seed": 0,
        "data": {"processed_dir": str(tmp / "processed")},
        "model": {"generator": "resnet_6blocks", "ngf": 8, "ndf": 8},
        "train": {"out_dir": str(tmp / "run")},
        "tracking": {"enabled": False, "uri": f"sqlite:///{tmp / 'mlflow.db'}"},
        "export": {
            "out_dir": str(tmp / "onnx"),
            "metrics_file": str(tmp / "metrics" / "export.json"),
            "parity_sizes": [[32, 32], [37, 27]],  # odd, non-square
            "parity_images": 2,
        },
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw)


def make_checkpoint(cfg: Config, path: Path, step: int = 42, seed: int = 0) -> Path:
    """A checkpoint dict with the documented keys and freshly initialised generators.

    The init is perturbed so the two directions (and InstanceNorm's statistics) differ from
    a near-constant output: parity on a nearly-flat image would prove little.
    """
    torch.manual_seed(seed)
    nets = {}
    for name in ("G_AB", "G_BA"):
        g = build_generator(cfg.model)
        with torch.no_grad():
            for p in g.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        nets[name] = g.state_dict()
    state = {
        "config": cfg.to_dict(),
        "step": step,
        "nets": nets,
        "optimizers": {},
        "schedulers": {},
        "scaler": {},
        "pools": {},
        "rng": {},
        "metrics": {},
        "versions": {},
    }
    return save_checkpoint(path, state)


def write_image(path: Path, size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Path:
    """A random image of ``size`` (width, height) in Pillow ``mode``."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    im = rgb if mode == "RGB" else rgb.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def make_processed(root: Path, n: int = 2, size: int = 32) -> Path:
    """A minimal processed dataset with real-looking (smooth) test images in both domains."""
    for domain in ("A", "B"):
        for i in range(n):
            y, x = np.mgrid[0:size, 0:size]
            r = (x * 255 // size + 40 * i) % 256
            g = (y * 255 // size) if domain == "A" else 255 - y * 255 // size
            arr = np.stack([r, g, np.full_like(r, 128)], -1).astype(np.uint8)
            folder = root / f"test{domain}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(folder / f"{domain}_{i}.png")
    return root
