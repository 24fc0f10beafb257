"""Two real torchrun processes (gloo, CPU) end at the same weights as one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.train_utils import cli_env, make_synth, net_weights, tiny_params, write_params


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth"))


def _outputs(path: Path, name: str, x: torch.Tensor, initial: bool = False) -> torch.Tensor:
    """``name``'s output for ``x`` with the checkpoint's weights (or the run's initial ones)."""
    from cyclegan.config import config_from_dict
    from cyclegan.train import seed_everything
    from cyclegan.training import distributed
    from cyclegan.training.step import CycleGAN

    state = torch.load(path, map_location="cpu", weights_only=True)
    cfg = config_from_dict(state["config"])
    seed_everything(cfg.seed)  # what train() does before building the networks
    net = CycleGAN(cfg, distributed.setup("cpu")).nets[name]
    if not initial:
        net.load_state_dict(state["nets"][name])
    with torch.no_grad():
        return net.eval()(x)


def test_ddp_two_processes_equal_single_process_same_global_batch(
    synth: Path, tmp_path: Path
) -> None:
    # The history pool is per rank (as in every DDP GAN), so it is off for an exact comparison;
    # augmentation stays on: it is seeded by stream position, not by rank.
    common = {"steps": 2, "checkpoint_every": 1, "sample_every": 100, "log_every": 1}
    single = write_params(
        tmp_path / "single.yaml",
        tiny_params(
            tmp_path,
            synth,
            loss={"pool_size": 0},
            train={**common, "batch_size": 2, "out_dir": str(tmp_path / "single")},
        ),
    )
    ddp = write_params(
        tmp_path / "ddp.yaml",
        tiny_params(
            tmp_path,
            synth,
            loss={"pool_size": 0},
            train={**common, "batch_size": 1, "out_dir": str(tmp_path / "ddp")},
        ),
    )
    run = subprocess.run(
        [sys.executable, "-m", "cyclegan.cli", "train", "--params", str(single)],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    run = _torchrun(ddp, tmp_path)
    assert "world size 2, per-process batch 1, global batch 2" in run.stderr
    logs = [_log(tmp_path / name) for name in ("single", "ddp")]
    # Step 1 is a forward pass of identical initial weights on identical images (the union of
    # the ranks' batches, same augmentation): the losses differ only by fp32 summation order,
    # ~1e-7 relative per operation; 1e-4 leaves a wide margin and still catches any wrong
    # image, crop or flip (those change a loss by percent).
    for key in ("G_AB", "G_BA", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B"):
        assert logs[1][0][key] == pytest.approx(logs[0][0][key], rel=1e-4), key
    assert [r["lr"] for r in logs[0]] == [r["lr"] for r in logs[1]]
    _assert_same_first_adam_step(tmp_path)
    # Later steps are compared only for bookkeeping: Adam normalises each gradient element, so
    # the rare sign flips above (2*lr on one element) feed back chaotically; a single process
    # run with 1 and with 2 threads already differs by ~lr on some weights after 4 steps.
    assert run.stdout.count("trained 2 steps (global batch 2)") == 1  # rank 0 alone prints


def _log(out_dir: Path) -> list[dict]:
    lines = (out_dir / "train_log.jsonl").read_text().splitlines()
    return [json.loads(ln) for ln in lines if ln.strip()]


def _assert_same_first_adam_step(root: Path) -> None:
    """The weights after step 1 agree as far as one Adam step allows.

    Adam's first, bias-corrected update is exactly ``lr * g / (|g| + eps)``: about ``+-lr`` per
    element whatever the gradient's size. Two runs whose gradients agree up to rounding therefore
    end step 1 equal up to rounding of the weights themselves, except where rounding flips the
    sign of a near-zero gradient: that element moves ``+lr`` in one run and ``-lr`` in the other,
    so ``|diff| <= 2 * lr`` always (the bound follows from lr and the step count, not the CPU).
    Such flips are rare (0.2 % of a generator's weights on an AMD EPYC), while a real error
    flips a large share of all signs (30 % when the ranks' gradients are not averaged), hence
    the 3 % bound, between the two, on elements that moved apart by more than lr / 2. Conv
    biases that feed InstanceNorm are left out: their true gradient is zero, so every sign is
    noise (and they cannot change any output, which the output check shows).
    """
    path_a = root / "single" / "checkpoints" / "step_00000001.pt"
    path_b = root / "ddp" / "checkpoints" / "step_00000001.pt"
    a, b = net_weights(path_a), net_weights(path_b)
    assert a.keys() == b.keys()
    lr = torch.load(path_a, weights_only=True)["config"]["optim"]["lr"]  # step 1 runs at it
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 2 * lr * (1 + 1e-3), f"max weight difference {worst} > 2 * lr"
    for net in ("G_AB", "G_BA", "D_A", "D_B"):
        keys = [k for k in a if k.startswith(f"{net}.") and k.endswith("weight")]
        apart = sum(int(((a[k] - b[k]).abs() > lr / 2).sum()) for k in keys)
        total = sum(a[k].numel() for k in keys)
        assert apart <= 0.03 * total, f"{net}: {apart} of {total} weights took opposite steps"
    # Outputs: the step moved every element by lr, a flip only a few elements by 2 * lr, so the
    # two outputs are far closer to each other than to the initial network's (measured: 5 % of
    # the step's move for a generator, 3e-6 for a discriminator; a quarter is the bound).
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for name in ("G_AB", "G_BA", "D_A", "D_B"):
        out_a, out_b = _outputs(path_a, name, x), _outputs(path_b, name, x)
        out_0 = _outputs(path_a, name, x, initial=True)
        apart, moved = float((out_a - out_b).norm()), float((out_a - out_0).norm())
        assert apart < 0.25 * moved, f"{name} outputs differ by {apart} (step moved {moved})"


def _torchrun(params: Path, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "--nnodes",
        "1",
        "-m",
        "cyclegan.cli",
        "train",
        "--params",
        str(params),
    ]
    run = subprocess.run(cmd, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    return run


def test_ddp_resume_restores_every_ranks_pool_and_rng(synth: Path, tmp_path: Path) -> None:
    # history pools on (per rank); a constant-lr schedule so a 2-step run is a prefix of 4 steps
    common = {"checkpoint_every": 2, "sample_every": 100, "batch_size": 1}

    def params(name: str, steps: int) -> Path:
        raw = tiny_params(
            tmp_path,
            synth,
            optim={"schedule": "step", "step_size": 1000},
            train={**common, "steps": steps, "out_dir": str(tmp_path / name)},
        )
        return write_params(tmp_path / f"{name}{steps}.yaml", raw)

    _torchrun(params("straight", 4), tmp_path)
    _torchrun(params("resumed", 2), tmp_path)
    state = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)
    assert len(state["ranks"]) == 2
    assert not torch.equal(state["ranks"][0]["rng"]["torch"], state["ranks"][1]["rng"]["torch"])
    run = _torchrun(params("resumed", 4), tmp_path)
    assert "resumed from" in run.stderr
    a = net_weights(tmp_path / "straight/checkpoints/last.pt")
    b = net_weights(tmp_path / "resumed/checkpoints/last.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after a DDP resume"
