"""Watching a run: collapse warnings and the A->B->A / B->A->B sample grid people look at."""

from __future__ import annotations

import logging
import math
import sys
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor, nn

log = logging.getLogger("cyclegan.train")

LOG_INTERVAL_S = 10.0  # not a terminal (CI, `dvc repro > log`): one progress line this often


def progress_bar(iterable: Iterable, file: TextIO | None = None, **kw: Any) -> Any:
    """A tqdm bar that redraws 5x a second on a terminal and every ``LOG_INTERVAL_S`` in logs."""
    from tqdm import tqdm

    file = file or sys.stderr
    tty = hasattr(file, "isatty") and file.isatty()
    interval = 0.2 if tty else LOG_INTERVAL_S
    return tqdm(iterable, file=file, dynamic_ncols=tty, mininterval=interval, **kw)


def show_progress(bar: Any, **postfix: str) -> None:
    """Set the bar's figures without drawing: tqdm's default ``refresh=True`` redraws on every
    call, bypassing ``mininterval`` (a line per step in logs). The next timed update shows them."""
    bar.set_postfix(refresh=False, **postfix)


class CollapseMonitor:
    """Warns when a discriminator loss sits near zero or a generator loss explodes.

    A discriminator that wins completely (loss ~0 for ``window`` steps) gives generators no
    signal; a generator loss many times its running median usually precedes divergence.
    """

    def __init__(self, window: int, d_floor: float = 1e-3, g_factor: float = 10.0) -> None:
        self.window, self.d_floor, self.g_factor = window, d_floor, g_factor
        self.d_hist: dict[str, deque[float]] = {}
        self.g_hist: deque[float] = deque(maxlen=max(window, 10))
        self.warnings: list[str] = []

    def update(self, step: int, losses: dict[str, float]) -> list[str]:
        new: list[str] = []
        for key in ("D_A", "D_B"):
            if key not in losses:
                continue
            hist = self.d_hist.setdefault(key, deque(maxlen=self.window))
            hist.append(abs(losses[key]))
            if len(hist) == self.window and max(hist) < self.d_floor:
                new.append(
                    f"step {step}: discriminator {key} loss stayed below {self.d_floor} for "
                    f"{self.window} steps (possible collapse: generators get no signal)"
                )
                hist.clear()
        g = losses.get("G")
        if g is not None and math.isfinite(g):
            if len(self.g_hist) >= 10:
                median = sorted(self.g_hist)[len(self.g_hist) // 2]
                if median > 0 and g > self.g_factor * median:
                    new.append(
                        f"step {step}: generator loss {g:.3g} is over {self.g_factor:g}x its "
                        f"running median {median:.3g} (possible divergence)"
                    )
            self.g_hist.append(g)
        for msg in new:
            log.warning(msg)
        self.warnings.extend(new)
        return new


@torch.no_grad()
def sample_grid(
    g_ab: nn.Module, g_ba: nn.Module, images_a: Tensor, images_b: Tensor, path: Path
) -> Path:
    """Rows: A, G_AB(A), G_BA(G_AB(A)), B, G_BA(B), G_AB(G_BA(B)); one column per image.

    Grey images are drawn grey, multispectral ones as bands 1-3 (``display_rgb``).
    """
    from torchvision.utils import save_image

    from cyclegan.data.transforms import display_rgb

    was = g_ab.training, g_ba.training
    g_ab.eval()
    g_ba.eval()
    dev = next(g_ab.parameters()).device
    a, b = images_a.to(dev), images_b.to(dev)
    fake_b = g_ab(a)
    fake_a = g_ba(b)
    rows = [a, fake_b, g_ba(fake_b), b, fake_a, g_ab(fake_a)]
    g_ab.train(was[0])
    g_ba.train(was[1])
    grid = torch.cat([display_rgb(r.float().cpu()) for r in rows], dim=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    save_image(grid * 0.5 + 0.5, tmp, nrow=a.shape[0], padding=2, pad_value=1.0)
    tmp.replace(path)
    return path
