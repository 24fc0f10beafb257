"""Shared fixtures: real servers (tests/servers.py), the shared real dataset, tiny configs."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
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


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving ``tmp_path/served``; yields (base URL, folder)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op thread: tiny nets gain nothing from more, and tests that start training
    subprocesses (torchrun, SIGKILL) must not oversubscribe the 2 cores CI has."""
    import torch

    threads = int(os.environ.get("CYCLEGAN_TEST_THREADS", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _user_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """XDG_CACHE_HOME (the precision probe's cache) in a temp dir, never the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield
