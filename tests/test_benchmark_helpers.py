"""The pure helpers of the benchmark scripts whose figures go into BENCHMARKS.md."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclegan.data.synth import BG_B, synthesize

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import precision_quality as pq
import time_to_quality as ttq


def _run(amp: str, seed: int, shift: float) -> dict:
    base = np.linspace(0.1, 0.5, 20)
    per = {m: base + shift for m, _ in pq.METRICS}
    return {"amp": amp, "seed": seed, "step": 10, "hue_map": "rotation",
            "per_image": {"AtoB": per, "BtoA": per}}  # fmt: skip


def test_compare_pairs_each_run_with_the_reference_of_its_seed() -> None:
    rows = pq.compare([_run("none", 0, 0.0), _run("bf16", 0, 0.02)], resamples=200, ci=0.95)
    assert len(rows) == 2 * 2 * len(pq.METRICS)
    ref = [r for r in rows if r["amp"] == "none"]
    other = [r for r in rows if r["amp"] == "bf16"]
    assert all("minus_none" not in r for r in ref)
    for r in other:  # a constant per-image shift: the paired interval collapses onto it
        d = r["minus_none"]
        assert d["mean"] == pytest.approx(0.02)
        assert d["lo"] == pytest.approx(0.02) and d["hi"] == pytest.approx(0.02)
        assert r["value"]["mean"] == pytest.approx(0.32)
        assert r["value"]["lo"] < 0.32 < r["value"]["hi"]  # images differ: a real interval
    table = pq.markdown(rows)
    assert "| bf16 | 0 | rotation | AtoB | l1_to_gt (lower is better) | 0.3200 [" in table
    assert "| 0.0200 [0.0200, 0.0200] |" in table and "(reference)" in table


def test_mean_target_baseline_by_hand(tmp_path: Path) -> None:
    for split in ("trainB", "testA_gt"):
        (tmp_path / split).mkdir()
    for i, v in enumerate((0, 102)):  # mean trainB image: 51 everywhere
        Image.fromarray(np.full((4, 4, 3), v, np.uint8)).save(tmp_path / "trainB" / f"{i}.png")
    Image.fromarray(np.full((4, 4, 3), 255, np.uint8)).save(tmp_path / "testA_gt" / "0.png")
    assert ttq.mean_target_l1(tmp_path) == pytest.approx((255 - 51) / 255)


class _Lookup(torch.nn.Module):
    """A "generator" that returns fixed images (in [-1, 1]) whatever its input."""

    def __init__(self, images: np.ndarray) -> None:
        super().__init__()
        self.out = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out[: len(x)]


def test_hue_maps_names_the_learned_colour_map(tmp_path: Path) -> None:
    synthesize(tmp_path, train=2, test=6, size=32, seed=3, progress=False)
    gt = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "testA_gt").iterdir())])
    objects = (gt != np.array(BG_B)).any(-1, keepdims=True)
    reflected = np.where(objects, gt[..., [0, 2, 1]], gt)  # red objects -> blue, not green
    right = ttq.hue_maps(_Lookup(gt), tmp_path)
    wrong = ttq.hue_maps(_Lookup(reflected), tmp_path)
    assert right["rotation"] < 1e-6 < right["reflection"]
    assert wrong["reflection"] < 1e-6 < wrong["rotation"]
    assert right["reflection"] == pytest.approx(wrong["rotation"])
