"""An exported generator run by ONNX Runtime, plus the image <-> tensor conventions it expects.

Exported models are self-describing (``metadata_props``: direction, normalisation, size
multiple, config/data hashes...), so a consumer needs only the ``.onnx`` file. The pixel
helpers here (``to_model_input``, ``from_model_output``, ``pad_to_multiple``) are the single
definition of "[-1, 1] = x/127.5 - 1, NCHW RGB" that translate, serving and evaluation share.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

NORMALIZATION = "[-1,1] = x/127.5-1"
LAYOUT = "NCHW RGB"


def layout(channels: int) -> str:
    """The ``layout`` metadata: ``NCHW RGB``, ``NCHW grey`` or ``NCHW <C>-channel``."""
    return {3: LAYOUT, 1: "NCHW grey"}.get(channels, f"NCHW {channels}-channel")


_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OnnxModelError(ValueError):
    """An ONNX file is missing, corrupt or not a generator; the message says how to fix it."""


def to_model_input(images: np.ndarray) -> np.ndarray:
    """``N×H×W×C`` uint8 -> ``N×C×H×W`` float32 in [-1, 1] (the training normalisation)."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected N×H×W×C uint8 images, got {images.dtype} {images.shape}")
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 127.5 - 1.0


def from_model_output(y: np.ndarray) -> np.ndarray:
    """``N×C×H×W`` float in [-1, 1] -> ``N×H×W×C`` uint8, rounding to nearest."""
    y = np.asarray(y, dtype=np.float32)
    return np.clip(np.rint((y + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def padded_size(side: int, multiple: int, min_size: int = 1) -> int:
    """The smallest multiple of ``multiple`` that is >= ``side`` and >= ``min_size``."""
    target = max(side, min_size)
    return -(-target // multiple) * multiple


def pad_to_multiple(
    x: np.ndarray, multiple: int, min_size: int = 1
) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad ``N×C×H×W`` (centred) so H and W fit the network; returns the crop offsets.

    Reflection avoids the flat borders replicate/zero padding would show the generator.
    numpy reflects repeatedly when the pad is wider than the image, so tiny inputs work too.
    """
    h, w = x.shape[-2:]
    ph, pw = padded_size(h, multiple, min_size) - h, padded_size(w, multiple, min_size) - w
    top, left = ph // 2, pw // 2
    if ph == 0 and pw == 0:
        return x, (0, 0)
    pads = [(0, 0)] * (x.ndim - 2) + [(top, ph - top), (left, pw - left)]
    mode = "reflect" if min(h, w) > 1 else "edge"
    return np.pad(x, pads, mode=mode), (top, left)


def translate_uint8(
    run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, multiple: int, min_size: int = 1
) -> np.ndarray:
    """uint8 ``N×H×W×C`` -> uint8 ``N×H×W×C'`` through ``run`` (float NCHW -> float NCHW).

    Pads to the network's multiple and crops back, so any image size keeps its size.
    """
    if images.ndim == 3:
        images = images[None]
    h, w = images.shape[1:3]
    x, (top, left) = pad_to_multiple(to_model_input(images), multiple, min_size)
    y = np.asarray(run(x))
    if y.shape[0] != x.shape[0] or y.shape[-2:] != x.shape[-2:]:
        raise OnnxModelError(
            f"the model mapped input {x.shape} to {y.shape}; a generator must keep N, H and W "
            "(re-export it with `cyclegan export`)"
        )
    return from_model_output(y[..., top : top + h, left : left + w])


def _load_session(path: Path, threads: int, providers: list[str] | None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: ORT's shape-merge warnings are noise here
    try:
        return ort.InferenceSession(
            str(path), opts, providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as e:  # ORT raises pybind errors (InvalidProtobuf, Fail, ...)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise OnnxModelError(
            f"{path}: not a loadable ONNX model ({type(e).__name__}: {first}). The file is "
            "corrupt or truncated; re-create it with `cyclegan export`"
        ) from e


def _static(dim: Any, default: int) -> int:
    """A static ONNX dimension, else ``default`` (from metadata, else 3)."""
    return dim if isinstance(dim, int) else default


class OnnxGenerator:
    """A generator ``.onnx`` under ONNX Runtime: ``gen(x)`` maps float NCHW in [-1, 1] to same.

    ``metadata`` holds the model's ``metadata_props``; ``size_multiple``/``min_size`` come from
    there (1 when absent), ``direction`` and ``precision`` likewise.
    """

    def __init__(
        self, path: str | Path, threads: int = 0, providers: list[str] | None = None
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxModelError(
                f"{self.path}: ONNX model not found. Run `cyclegan export` first or pass the "
                "right --model (a folder with generator_AtoB.onnx/generator_BtoA.onnx or a .onnx)"
            )
        self.session = _load_session(self.path, threads, providers)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1 or len(inputs[0].shape) != 4:
            shapes = [(i.name, i.shape) for i in inputs]
            raise OnnxModelError(
                f"{self.path}: not an image generator: expected one N×C×H×W input, got {shapes}"
            )
        self.input_name = inputs[0].name
        self.input_dtype = _DTYPES.get(inputs[0].type, np.float32)
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.channels = _static(inputs[0].shape[1], self._int_meta("input_channels", 3))
        self.out_channels = _static(outputs[0].shape[1], self._int_meta("output_channels", 3))

    def _int_meta(self, key: str, default: int) -> int:
        try:
            return int(self.metadata.get(key, default))
        except ValueError:
            return default

    @property
    def size_multiple(self) -> int:
        return max(1, self._int_meta("size_multiple", 1))

    @property
    def min_size(self) -> int:
        return max(1, self._int_meta("min_size", 1))

    @property
    def direction(self) -> str:
        return self.metadata.get("direction", "unknown")

    @property
    def precision(self) -> str:
        return self.metadata.get("precision", "fp32")

    def __call__(self, x: Any) -> np.ndarray:
        """Float ``N×C×H×W`` (numpy or torch) in [-1, 1] -> float32 numpy of the same shape."""
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"{self.path.name}: expected input N×{self.channels}×H×W, got {x.shape}"
            )
        try:
            y = self.session.run(None, {self.input_name: x})[0]
        except Exception as e:  # ORT's pybind errors derive from Exception only
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise OnnxModelError(
                f"{self.path.name}: ONNX Runtime failed on {x.shape}: {first}"
            ) from e
        return np.asarray(y, dtype=np.float32)

    def translate_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``N×H×W×C`` (or one ``H×W×C``) -> uint8 ``N×H×W×C'`` of the same size."""
        return translate_uint8(self, images, self.size_multiple, self.min_size)

    def __repr__(self) -> str:
        return f"OnnxGenerator({str(self.path)!r}, direction={self.direction!r})"
