"""The pure helpers of the benchmark scripts whose figures go into BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
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


def _result(seed: int, final: float, hue_map: str, reached: bool) -> dict:
    point = {"step": 200, "l1_AtoB": final, "l1_BtoA": 0.06, "hue_map": hue_map}
    return {"seed": seed, "baseline_mean_target_l1": 0.08, "target_l1": 0.056,
            "reached": reached, "steps_to_target": 200 if reached else None,
            "curve": [{**point, "l1_AtoB": 0.07}, point], "final": point}  # fmt: skip


def test_seed_summary_by_hand() -> None:
    runs = [_result(0, 0.04, "rotation", True), _result(1, 0.068, "reflection", False),
            _result(2, 0.06, "rotation", True)]  # fmt: skip
    # seed 2 met the aim at a checkpoint, then ended above it
    s = ttq.summarize(runs)
    assert s["seeds"] == [0, 1, 2] and s["right_hue_map"] == 2
    assert s["aim_met_at_the_end"] == 1 and s["aim_met_at_some_checkpoint"] == 2
    assert s["final_l1_AtoB"]["mean"] == pytest.approx(0.056)
    assert s["final_l1_AtoB"]["mean_vs_baseline"] == "\u221230 %"
    table = ttq.markdown(runs)
    assert "| 1 | .0700 | 0.0680 | \u221215 % | reflection | 0.0600 | not met |" in table
    assert "| 0 | .0700 | 0.0400 | \u221250 % | rotation | 0.0600 | 200 |" in table
    summary = "right hue map 2/3; aim (L1 <= 0.056) met at the end 1/3, at some checkpoint 2/3"
    assert summary in table
    assert ttq.parse_seeds("0-2,7") == [0, 1, 2, 7]
    for bad in ("0-2,1", "a", "3-1"):  # a repeat, not a number, an empty range
        with pytest.raises(SystemExit, match="distinct seeds"):
            ttq.parse_seeds(bad)


def test_seeds_run_as_separate_processes_and_are_summarised(tmp_path: Path) -> None:
    params = {
        "seed": 0,
        "data": {"synth": {"train": 8, "test": 4, "size": 32, "seed": 0}},
        "transforms": {"load_size": 32, "crop_size": 32},
        "model": {"generator": "resnet_6blocks", "ngf": 4, "ndf": 4},
        "train": {"steps": 2, "batch_size": 2, "amp": "none", "sample_every": 2},
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    script = Path(ttq.__file__)
    cmd = [sys.executable, str(script), "--params", str(tmp_path / "p.yaml"),
           "--data", str(tmp_path / "data"), "--out", str(tmp_path / "runs"), "--full",
           "--eval-every", "2", "--seeds", "3,5", "--jobs", "2",
           "--json", str(tmp_path / "s.json")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "s.json").read_text())
    runs = result["runs"]
    assert result["summary"]["seeds"] == [r["seed"] for r in runs] == [3, 5]
    assert runs[0]["final"]["l1_AtoB"] != runs[1]["final"]["l1_AtoB"]  # really two seeds
    assert all(r["threads"] == max(1, (os.cpu_count() or 1) // 2) for r in runs)
    assert (tmp_path / "runs" / "seed_3" / "checkpoints" / "last.pt").is_file()
    assert "| 3 | " in done.stdout and "| 5 | " in done.stdout and "right hue map" in done.stdout
