"""The exported generators as an MLflow pyfunc model: uint8 images in, uint8 images out.

Why uint8 ``N×H×W×3``: it is what a decoded PNG/JPEG is, so a client (``mlflow models serve``,
a notebook, a batch job) sends pixels as they are and never has to know the model's
normalisation; that knowledge (``x/127.5 - 1``, NCHW, padding to the network's multiple) lives
in the model next to the ``.onnx`` it belongs to. It is also 4x smaller on the wire than
float32. One model holds both directions; ``params={"direction": "BtoA"}`` picks the other.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from cyclegan.models.onnx_generator import OnnxGenerator

DIRECTIONS = ("AtoB", "BtoA")


class ServingError(ValueError):
    """A prediction request cannot be served (bad direction or image array)."""


class OnnxTranslator(mlflow.pyfunc.PythonModel):
    """Wraps ONNX Runtime; the ``.onnx`` files are the model's artifacts ``AtoB``/``BtoA``."""

    def load_context(self, context: Any) -> None:
        self.generators = {
            d: OnnxGenerator(p) for d, p in context.artifacts.items() if d in DIRECTIONS
        }

    # np.ndarray is the one input hint MLflow 3 takes without inferring a schema from it (the
    # explicit tensor signature below is the schema).
    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """uint8 ``N×H×W×3`` (or one ``H×W×3``) -> uint8 ``N×H×W×3`` of the same size."""
        direction = (params or {}).get("direction", "AtoB")
        if direction not in self.generators:
            raise ServingError(
                f"direction {direction!r} is not in this model (has {sorted(self.generators)})"
            )
        images = np.asarray(model_input)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ServingError(f"expected uint8 images N×H×W×3, got shape {images.shape}")
        if images.dtype != np.uint8:
            if images.size and (images.min() < 0 or images.max() > 255):
                raise ServingError("pixel values must be in 0..255 (uint8 RGB)")
            images = images.astype(np.uint8)
        return self.generators[direction].translate_images(images)


def signature() -> Any:
    """uint8 ``N×H×W×3`` in and out (any N, H, W), plus the ``direction`` parameter."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    image = TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))
    return ModelSignature(
        inputs=Schema([image]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
        params=ParamSchema([ParamSpec("direction", "string", "AtoB")]),
    )


def _requirements() -> list[str]:
    """Pinned runtime needs (explicit, so MLflow does not import-sniff in a subprocess)."""
    out = []
    for pkg in ("mlflow", "onnxruntime", "numpy", "torch", "pyyaml"):
        try:
            out.append(f"{pkg}=={importlib.metadata.version(pkg).split('+')[0]}")
        except importlib.metadata.PackageNotFoundError:
            out.append(pkg)
    return out


MODEL_CODE = Path(__file__).with_name("mlflow_model.py")


def log_onnx_model(
    files: dict[str, Path],
    name: str = "onnx_model",
    checkpoint: Path | None = None,
    registered_model_name: str | None = None,
) -> Any:
    """Log ``{"AtoB": path, "BtoA": path}`` (+ the PyTorch ``checkpoint``) as one pyfunc model.

    Models-from-code: the model is the file ``mlflow_model.py``, not a pickled object. The
    ``cyclegan`` package travels as ``code_paths`` so the model loads where the project is not
    installed (the package's own imports still need the pinned requirements).
    """
    import cyclegan

    unknown = sorted(set(files) - set(DIRECTIONS))
    if unknown or not files:
        raise ServingError(f"files must map {DIRECTIONS} to .onnx paths, got keys {sorted(files)}")
    artifacts = {d: str(p) for d, p in files.items()}
    if checkpoint is not None:
        artifacts["checkpoint"] = str(checkpoint)
    example = np.full((1, 16, 16, 3), 128, dtype=np.uint8)  # also a serving payload example
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(MODEL_CODE),
        artifacts=artifacts,
        signature=signature(),
        input_example=example,
        code_paths=[str(Path(cyclegan.__file__).parent)],
        pip_requirements=_requirements(),
        registered_model_name=registered_model_name,
    )
