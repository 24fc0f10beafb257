"""MLflow: export logs a pyfunc model into a real sqlite store; it loads and translates."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from cyclegan import tracking
from cyclegan.config import Config
from cyclegan.data.io import load_image
from cyclegan.export import ExportResult, export
from cyclegan.models.onnx_generator import OnnxGenerator
from cyclegan.serving import ServingError
from tests.conftest import SUNFLOWER
from tests.export_utils import make_checkpoint, tiny_cfg, write_image


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
    cfg, res, train_run = logged
    assert res.mlflow_run_id == train_run
    run = mlflow.get_run(train_run)
    assert run.data.metrics["export.AtoB.max_abs"] == pytest.approx(
        max(r.max_abs for r in res.parity if r.file == "generator_AtoB.onnx")
    )
    assert run.data.metrics["export.BtoA.megabytes"] == round(res.sizes["BtoA"] / 1e6, 3)
    versions = mlflow.MlflowClient().search_model_versions(
        f"name='{cfg.tracking.registered_model}'"
    )
    assert [int(v.version) for v in versions] == [1]


def test_pyfunc_model_translates_like_onnx_runtime(
    logged: tuple[Config, ExportResult, str], tmp_path: Path
) -> None:
    cfg, res, _ = logged
    model = mlflow.pyfunc.load_model(f"models:/{cfg.tracking.registered_model}/1")
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
