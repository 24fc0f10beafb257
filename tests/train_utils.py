"""Helpers for training tests: a tiny synthetic dataset and a tiny, fast config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from cyclegan.config import Config, config_from_dict

ROOT = Path(__file__).resolve().parents[1]


def make_synth(root: Path, train: int = 24, test: int = 6, size: int = 32) -> Path:
    from cyclegan.data.synth import synthesize

    if not (root / "trainA").is_dir():
        synthesize(root, train=train, test=test, size=size, seed=0)
    return root


def tiny_params(tmp: Path, data_root: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A params tree for a seconds-long CPU run; ``sections`` deep-merge over it."""
    raw: dict[str, Any] = {
        "seed": 0,
        "data": {"processed_dir": str(data_root)},
        "transforms": {"load_size": 36, "crop_size": 32, "flip_prob": 0.5},
        "model": {"generator": "resnet_6blocks", "ngf": 8, "ndf": 8},
        "train": {
            "steps": 6,
            "batch_size": 2,
            "out_dir": str(tmp / "run"),
            "log_every": 1,
            "sample_every": 3,
            "checkpoint_every": 3,
            "keep_last": 10,
            "eval_every": 0,
            "threads": 1,
            "amp": "none",  # auto measures the machine: tests must not depend on which one
        },
        "tracking": {"enabled": False, "uri": f"sqlite:///{tmp / 'mlflow.db'}"},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(name, {}).update(values)
        else:
            raw[name] = values
    return raw


def tiny_cfg(tmp: Path, data_root: Path, **sections: dict[str, Any]) -> Config:
    return config_from_dict(tiny_params(tmp, data_root, **sections))


def write_params(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def cli_env() -> dict[str, str]:
    """The environment for our CLIs; the interpreter's bin first on PATH (as `make test` sets
    it), since tools such as `mlflow models serve` start others (uvicorn) by name."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", GLOO_SOCKET_IFNAME="lo")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_cli(args: list[str], cwd: Path, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cyclegan.cli", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        **kw,
    )


def net_weights(ckpt_path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    return {f"{net}.{k}": v for net, sd in state["nets"].items() for k, v in sd.items()}


def dvc(*args: str, cwd: Path) -> None:
    """The real ``dvc`` CLI in a subprocess (its in-process logger keeps the streams of the test
    that first imported it, which pytest closes afterwards)."""
    subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args], cwd=cwd, check=True, capture_output=True
    )
