"""LR schedules: exact values at chosen iterations against the formulas, state round-trip."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from cyclegan.config import ConfigError, OptimConfig
from cyclegan.training.checkpoint import load_checkpoint, save_checkpoint
from cyclegan.training.schedulers import build_scheduler

LR = 0.0002


def _lrs(ocfg: OptimConfig, total: int, steps: int) -> list[float]:
    """lr used at iterations 0..steps-1 (read before each optimizer step)."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=ocfg.lr)
    sched = build_scheduler(opt, ocfg, total)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_linear_constant_then_to_zero() -> None:
    lrs = _lrs(OptimConfig(lr=LR, schedule="linear", decay_start=0.5), total=10, steps=12)
    # 5 constant iterations, then (10 - t) / 5 of lr
    assert lrs[:6] == pytest.approx([LR] * 6)
    assert lrs[6:] == pytest.approx([LR * 4 / 5, LR * 3 / 5, LR * 2 / 5, LR / 5, 0.0, 0.0])


def test_linear_uneven_fraction() -> None:
    lrs = _lrs(OptimConfig(lr=LR, decay_start=0.25), total=7, steps=8)
    # floor(0.25 * 7) = 1 constant iteration, then (7 - t) / 6
    assert lrs == pytest.approx([LR] + [LR * (7 - t) / 6 for t in range(1, 7)] + [0.0])


def test_linear_decay_start_one_is_constant() -> None:
    lrs = _lrs(OptimConfig(lr=LR, decay_start=1.0), total=4, steps=5)
    assert lrs == pytest.approx([LR, LR, LR, LR, 0.0])


def test_cosine_with_warmup() -> None:
    ocfg = OptimConfig(lr=LR, schedule="cosine", warmup_steps=4)
    lrs = _lrs(ocfg, total=12, steps=13)
    assert lrs[:4] == pytest.approx([LR * 0.25, LR * 0.5, LR * 0.75, LR])
    for t in (4, 6, 8, 11):
        assert lrs[t] == pytest.approx(LR * 0.5 * (1 + math.cos(math.pi * (t - 4) / 8)))
    assert lrs[8] == pytest.approx(LR / 2)  # half way through the cosine
    assert lrs[12] == 0.0


def test_cosine_without_warmup_starts_at_lr() -> None:
    lrs = _lrs(OptimConfig(lr=LR, schedule="cosine"), total=4, steps=4)
    assert lrs == pytest.approx(
        [LR, LR * (1 + math.sqrt(0.5)) / 2, LR / 2, LR * (1 - math.sqrt(0.5)) / 2]
    )


def test_step_decay() -> None:
    lrs = _lrs(OptimConfig(lr=LR, schedule="step", step_size=3, gamma=0.1), total=100, steps=10)
    assert lrs == pytest.approx([LR] * 3 + [LR * 0.1] * 3 + [LR * 0.01] * 3 + [LR * 0.001])


@pytest.mark.parametrize("schedule", ["linear", "cosine", "step"])
def test_state_round_trip_through_a_checkpoint(schedule: str, tmp_path: Path) -> None:
    ocfg = OptimConfig(lr=LR, schedule=schedule, warmup_steps=2, step_size=3)
    total = 20
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=LR)
    sched = build_scheduler(opt, ocfg, total)
    for _ in range(7):
        opt.step()
        sched.step()
    state = {
        "config": {},
        "step": 7,
        "nets": {},
        "optimizers": {"G": opt.state_dict()},
        "schedulers": {"G": sched.state_dict()},
    }
    loaded = load_checkpoint(save_checkpoint(tmp_path / "s.pt", state))
    param2 = torch.nn.Parameter(torch.zeros(1))
    opt2 = torch.optim.Adam([param2], lr=LR)
    sched2 = build_scheduler(opt2, ocfg, total)
    opt2.load_state_dict(loaded["optimizers"]["G"])
    sched2.load_state_dict(loaded["schedulers"]["G"])
    resumed = []
    for _ in range(15):
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
        resumed.append(opt2.param_groups[0]["lr"])
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()
    assert resumed == pytest.approx(_lrs(ocfg, total, 22)[7:])
    assert len(set(resumed)) > 2  # the resumed stretch really changes the lr


def test_bad_totals() -> None:
    with pytest.raises(
        ConfigError, match=r"optim.warmup_steps: must be < train.steps \(5\), got 5"
    ):
        _lrs(OptimConfig(schedule="cosine", warmup_steps=5), total=5, steps=1)
    with pytest.raises(ConfigError, match="train.steps: must be >= 1, got 0"):
        _lrs(OptimConfig(), total=0, steps=1)
    bad = dataclasses.replace(OptimConfig(), schedule="poly")  # bypasses YAML validation
    with pytest.raises(
        ConfigError, match=r"unknown schedule 'poly' \(valid: linear, cosine, step\)"
    ):
        _lrs(bad, total=5, steps=1)
