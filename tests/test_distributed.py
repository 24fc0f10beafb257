"""Two real torchrun processes (gloo, CPU) end at the same weights as one process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.train_utils import cli_env, make_synth, net_weights, tiny_params, write_params


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth"))


def _outputs(path: Path, name: str, x: torch.Tensor) -> torch.Tensor:
    from cyclegan.config import config_from_dict
    from cyclegan.models import build_discriminator, build_generator

    state = torch.load(path, map_location="cpu", weights_only=True)
    cfg = config_from_dict(state["config"])
    net = build_generator(cfg.model) if name.startswith("G") else build_discriminator(cfg.model)
    net.load_state_dict(state["nets"][name])
    with torch.no_grad():
        return net.eval()(x)


def test_ddp_two_processes_equal_single_process_same_global_batch(
    synth: Path, tmp_path: Path
) -> None:
    # The history pool is per rank (as in every DDP GAN), so it is off for an exact comparison;
    # augmentation stays on: it is seeded by stream position, not by rank.
    common = {"steps": 4, "checkpoint_every": 4, "sample_every": 100, "log_every": 1}
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
    a_path = tmp_path / "single" / "checkpoints" / "last.pt"
    b_path = tmp_path / "ddp" / "checkpoints" / "last.pt"
    a, b = net_weights(a_path), net_weights(b_path)
    assert a.keys() == b.keys()
    # Every weight matches. Conv biases that feed InstanceNorm have a true gradient of zero, so
    # Adam turns float noise into +-lr steps there; they cannot change any output, which is
    # what the second check shows for all four networks.
    worst = max(float((a[k] - b[k]).abs().max()) for k in a if k.endswith("weight"))
    assert worst < 1e-5, f"max weight difference {worst}"
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for name in ("G_AB", "G_BA", "D_A", "D_B"):
        out_a, out_b = _outputs(a_path, name, x), _outputs(b_path, name, x)
        assert torch.allclose(out_a, out_b, atol=1e-4), f"{name} outputs differ"
    # only rank 0 prints the summary
    assert run.stdout.count("trained 4 steps (global batch 2)") == 1


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
