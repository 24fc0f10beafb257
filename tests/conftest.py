"""Shared fixtures: real servers (tests/servers.py), the shared real dataset, tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.registry_utils import registry_bench  # noqa: F401 (fixture)
from tests.servers import mlflow_server, postgres, s3_env, s3_server  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SUNFLOWER = SHARED / "datasets" / "sunflower2daisy"


@pytest.fixture
def sunflower() -> Path:
    """The shared real dataset; skips where ``../shared`` is absent (a user's clone)."""
    if not SUNFLOWER.is_dir():
        pytest.skip(f"shared real dataset not found at {SUNFLOWER} (only CI and devs have it)")
    return SUNFLOWER


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op thread: tiny nets gain nothing from more, and tests that start training
    subprocesses (torchrun, SIGKILL) must not oversubscribe the 2 cores CI has."""
    import torch

    threads = int(os.environ.get("CYCLEGAN_TEST_THREADS", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    torch.set_num_threads(threads)
