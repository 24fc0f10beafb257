"""MLflow serving: export logs a pyfunc model (sqlite store); ``@champion`` of the real server
translates in-process and behind ``mlflow models serve``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests

from cyclegan import tracking
from cyclegan.config import Config
from cyclegan.data.io import load_image
from cyclegan.export import ExportResult, export
from cyclegan.models.onnx_generator import OnnxGenerator
from cyclegan.promote import promote
from cyclegan.serving import ServingError
from tests.conftest import SUNFLOWER
from tests.export_utils import make_checkpoint, tiny_cfg, write_image
from tests.registry_utils import RegistryBench, gate
from tests.servers import free_port, wait_http
from tests.train_utils import cli_env


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, ExportResult, str]:
    """Export with tracking on; a training run already exists and its id is in the run folder."""
    tmp = tmp_path_factory.mktemp("serving")
    cfg = tiny_cfg(tmp, tracking={"enabled": True}, export={"parity_images": 0})
    make_checkpoint(cfg, Path(cfg.train.out_dir) / "checkpoints" / "best.pt")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)  # nothing may land in ./mlruns of the working directory
        with tracking.mlflow_run(cfg.tracking, run_name="train") as run:
            train_run = run.info.run_id
        (Path(cfg.train.out_dir) / tracking.RUN_ID_FILE).write_text(train_run)
        result = export(cfg)
    db = Path(cfg.tracking.uri.removeprefix("sqlite:///"))
    assert any((db.parent / "mlartifacts").rglob("*.onnx")), "artefacts live beside the store"
    assert not (tmp / "mlruns").exists()
    return cfg, result, train_run


def _image(tmp: Path) -> np.ndarray:
    """A real photo when the shared data is there, else a random image; odd size either way."""
    photos = sorted((SUNFLOWER / "testA").glob("*.jpg")) if SUNFLOWER.is_dir() else []
    if photos:
        return np.asarray(load_image(photos[0]))[:217, :201]
    return np.asarray(load_image(write_image(tmp / "random.png", (201, 217))))


def test_export_logs_into_the_training_run(logged: tuple[Config, ExportResult, str]) -> None:
    _, res, train_run = logged
    assert res.mlflow_run_id == train_run
    run = mlflow.get_run(train_run)
    assert run.data.metrics["export.AtoB.max_abs"] == pytest.approx(
        max(r.max_abs for r in res.parity if r.file == "generator_AtoB.onnx")
    )
    assert run.data.metrics["export.BtoA.megabytes"] == round(res.sizes["BtoA"] / 1e6, 3)
    assert mlflow.MlflowClient().search_registered_models() == []  # `cyclegan register` does
    assert res.model_uri.startswith("models:/m-")


def test_pyfunc_model_translates_like_onnx_runtime(
    logged: tuple[Config, ExportResult, str], tmp_path: Path
) -> None:
    _, res, _ = logged
    model = mlflow.pyfunc.load_model(res.model_uri)
    sig = model.metadata.signature
    assert sig.inputs.to_dict() == [
        {"type": "tensor", "tensor-spec": {"dtype": "uint8", "shape": (-1, -1, -1, 3)}}
    ]
    assert sig.outputs.to_dict() == sig.inputs.to_dict()
    image = _image(tmp_path)
    out = model.predict(image[None])
    assert out.dtype == np.uint8 and out.shape == (1, *image.shape)
    direct = OnnxGenerator(res.files["AtoB"]).translate_images(image[None])
    assert np.array_equal(out, direct)
    back = model.predict(image[None], params={"direction": "BtoA"})
    assert np.array_equal(back, OnnxGenerator(res.files["BtoA"]).translate_images(image[None]))
    assert not np.array_equal(back, out)


def test_pyfunc_rejects_bad_requests(logged: tuple[Config, ExportResult, str]) -> None:
    _, res, _ = logged
    model = mlflow.pyfunc.load_model(res.model_uri)
    image = np.zeros((1, 16, 16, 3), np.uint8)
    with pytest.raises(ServingError) as e:
        model.predict(image, params={"direction": "CtoD"})
    assert str(e.value) == "direction 'CtoD' is not in this model (has ['AtoB', 'BtoA'])"
    with pytest.raises(Exception, match="uint8"):  # MLflow's schema enforcement
        model.predict(np.zeros((1, 16, 16, 3), np.float32))


def test_champion_serves_in_process_and_over_rest(
    registry_bench: RegistryBench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's serving contract, against the real server (PostgreSQL + S3 artefacts)."""
    bench = registry_bench
    name = bench.fresh("serve")
    promote(bench.params(gates=[gate(min_margin=-10.0)]), name, "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", bench.server.uri)
    uri = f"models:/{name}@champion"
    image = _image(tmp_path)
    expected = OnnxGenerator(bench.tmp / "onnx" / "generator_AtoB.onnx").translate_images(
        image[None]
    )
    out = mlflow.pyfunc.load_model(uri).predict(image[None])
    assert np.array_equal(out, expected)

    port = free_port()
    serve = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            uri,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env={**cli_env(), "MLFLOW_TRACKING_URI": bench.server.uri},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", 240, serve)
        reply = requests.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"inputs": image[None].tolist(), "params": {"direction": "AtoB"}},
            timeout=120,
        )
        assert reply.status_code == 200, reply.text[:500]
        served = np.asarray(reply.json()["predictions"], dtype=np.uint8)
        assert np.array_equal(served, expected)
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(30)
