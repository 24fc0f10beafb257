"""Translate step: a file, folder or glob of images of any size and mode -> PNGs (or TIFFs).

Outputs are RGB PNGs for 3-channel models, 8-bit grey PNGs for 1-channel ones and ``H×W×C``
uint8 TIFFs for any other channel count (multispectral). Inputs are read with the model's input
channel count (``data.io.load_image``). ONNX Runtime runs the exported generator by default (what
gets deployed); ``backend="torch"`` runs a checkpoint instead. Images keep their size: each is
reflect-padded to the network's multiple (read from the ONNX metadata) and cropped back; images
of the same size are batched.
One unreadable file is reported in ``TranslateResult.failed`` and never stops the folder.
"""

from __future__ import annotations

import glob
import io
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan.data.channels import file_suffix, tiff_bytes
from cyclegan.data.errors import DataError
from cyclegan.data.io import IMAGE_EXTENSIONS, is_image_name, list_images, load_image, pixel_array
from cyclegan.models.onnx_generator import OnnxGenerator, OnnxModelError, translate_uint8

DIRECTIONS = ("AtoB", "BtoA")
BACKENDS = ("onnx", "torch")


class TranslateError(ValueError):
    """Bad arguments (no inputs, unknown model/backend); per-image problems go to ``failed``."""


@dataclass
class TranslateResult:
    model: str
    backend: str
    direction: str
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # outputs that existed (no --overwrite)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (input, reason)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"translated {len(self.written)} image(s) {self.direction} with {self.backend} "
            f"({self.model}) in {self.seconds:.1f}s; skipped {len(self.skipped)} existing, "
            f"failed {len(self.failed)}"
        ]
        if self.skipped:
            lines.append("existing outputs kept (pass --overwrite to replace them)")
        lines += [f"  failed: {p}: {reason}" for p, reason in self.failed]
        return "\n".join(lines)


@dataclass
class _Runner:
    """A generator behind one interface: float NCHW in [-1, 1] -> same, plus its padding."""

    run: Callable[[np.ndarray], np.ndarray]
    multiple: int
    min_size: int
    name: str
    in_channels: int = 3
    out_channels: int = 3


_CHECKPOINT_NAMES = ("checkpoints/best.pt", "checkpoints/last.pt", "best.pt", "last.pt")


def _onnx_path(model: Path, direction: str) -> Path:
    if model.is_dir():
        return model / f"generator_{direction}.onnx"
    return model


def _is_checkpoint_file(path: Path) -> bool:
    """``torch.save`` writes a zip archive; an ONNX file is a protobuf (never starts with PK)."""
    if path.suffix.lower() in (".pt", ".pth", ".ckpt"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _backend_mismatch_onnx(model: Path, path: Path) -> None:
    """``--backend onnx`` given a checkpoint or a run folder: say so, not "corrupt"."""
    found = None
    if path.is_file() and _is_checkpoint_file(path):
        found = path
    elif model.is_dir() and not path.exists():
        found = next((model / n for n in _CHECKPOINT_NAMES if (model / n).is_file()), None)
    if found is not None:
        raise TranslateError(
            f"{found} is a PyTorch checkpoint, not an ONNX model: pass --backend torch to run "
            "it, or --model with the `cyclegan export` output (default models/onnx)"
        )


def _load_onnx(model: Path, direction: str, threads: int) -> _Runner:
    path = _onnx_path(model, direction)
    _backend_mismatch_onnx(model, path)
    gen = OnnxGenerator(path, threads=threads)
    if gen.direction not in ("unknown", direction):
        raise TranslateError(
            f"{path} translates {gen.direction}, but direction {direction} was asked for; pass "
            f"--direction {gen.direction} or the other file"
        )
    return _Runner(gen, gen.size_multiple, gen.min_size, str(path), gen.channels, gen.out_channels)


def _checkpoint_path(model: Path) -> Path:
    if model.is_dir():
        for name in _CHECKPOINT_NAMES:
            if (model / name).is_file():
                return model / name
        onnx = sorted(p.name for p in model.glob("*.onnx"))
        if onnx:
            raise TranslateError(
                f"{model} holds ONNX models ({', '.join(onnx)}), not a PyTorch checkpoint: pass "
                "--backend onnx to run them, or --model with a .pt or a training run folder"
            )
        raise TranslateError(
            f"no checkpoint in {model} (looked for checkpoints/best.pt, checkpoints/last.pt); "
            "pass --model PATH.pt"
        )
    if model.suffix == ".onnx":
        raise TranslateError(
            f"{model} is an ONNX model, not a PyTorch checkpoint: pass --backend onnx to run "
            "it, or --model with a .pt or a training run folder"
        )
    return model


def _load_torch(model: Path, direction: str, threads: int) -> _Runner:
    import torch

    from cyclegan.models import generator_size_multiple
    from cyclegan.training.checkpoint import load_generators

    if threads > 0:
        torch.set_num_threads(threads)
    path = _checkpoint_path(model)
    cfg, g_ab, g_ba = load_generators(path, device="cpu")
    net = g_ab if direction == "AtoB" else g_ba

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()

    multiple = generator_size_multiple(cfg.model)
    nc = (cfg.model.input_nc, cfg.model.output_nc)
    in_c, out_c = nc if direction == "AtoB" else nc[::-1]
    return _Runner(run, multiple, int(getattr(net, "min_size", 1)), str(path), in_c, out_c)


def load_runner(model: str | Path, direction: str, backend: str, threads: int = 0) -> _Runner:
    """The generator for ``direction`` from an ONNX folder/file or a checkpoint."""
    if direction not in DIRECTIONS:
        raise TranslateError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if backend not in BACKENDS:
        raise TranslateError(f"backend must be one of {BACKENDS}, got {backend!r}")
    loader = _load_onnx if backend == "onnx" else _load_torch
    return loader(Path(model), direction, threads)


def find_inputs(spec: str | Path) -> list[Path]:
    """A file, a folder (its images, sorted) or a glob (``**`` recurses)."""
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        images = list_images(path)
        if not images:  # exit 2 like an empty glob: "translated 0 image(s)" hides a wrong path
            others = [p.name for p in sorted(path.iterdir())]
            n = len(others)
            held = (
                f"{n} other {'entry' if n == 1 else 'entries'} (e.g. {others[0]})"
                if n
                else "nothing"
            )
            exts = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise TranslateError(
                f"no input images in folder {path}: it holds {held}; images are read directly "
                f"in the folder (not sub-folders) with the extensions {exts}"
            )
        return images
    matches = sorted(Path(p) for p in glob.glob(str(spec), recursive=True))
    found = [p for p in matches if p.is_file() and is_image_name(p)]
    if not found:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise TranslateError(
            f"no input images: {spec} is not a file, a folder or a glob matching images ({exts})"
        )
    return found


def plan_outputs(inputs: list[Path], output: Path, suffix: str = ".png") -> dict[Path, Path]:
    """Input -> output path: ``output`` itself for one input named ``*<suffix>``, else a folder.

    ``suffix`` is ``.png`` (RGB or grey models) or ``.tif`` (other output channel counts).
    """
    if len(inputs) == 1 and output.suffix.lower() in {suffix, suffix.replace(".tif", ".tiff")}:
        return {inputs[0]: output}
    if output.suffix.lower() in IMAGE_EXTENSIONS:
        raise TranslateError(
            f"output {output} looks like a file, but {len(inputs)} inputs were given (or it is "
            f"not {suffix}): pass a folder, or a {suffix} path for a single input"
        )
    return {p: output / f"{p.stem}{suffix}" for p in inputs}


def _encode(pixels: np.ndarray) -> bytes:
    """``H×W×C`` uint8 -> PNG (RGB, grey) or TIFF (any other channel count)."""
    from PIL import Image

    channels = pixels.shape[-1]
    if channels not in (1, 3):
        return tiff_bytes(pixels)
    buf = io.BytesIO()
    img = Image.fromarray(pixels, mode="RGB") if channels == 3 else Image.fromarray(pixels[..., 0])
    img.save(buf, format="PNG")
    return buf.getvalue()


def _save_image(pixels: np.ndarray, dest: Path) -> None:
    """Write atomically: a killed run never leaves a truncated file that looks finished."""
    data = _encode(pixels)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")  # see storage
    try:
        with open(tmp, "xb") as f:  # unlike mkstemp (0600), honours the umask like any output
            f.write(data)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _batches(
    jobs: list[tuple[Path, Path]],
    batch_size: int,
    result: TranslateResult,
    bar: Any,
    channels: int = 3,
) -> Iterator[list[tuple[Path, Path, np.ndarray]]]:
    """Same-size groups of decoded images, at most ``batch_size`` each (bounded memory)."""
    pending: dict[tuple[int, ...], list[tuple[Path, Path, np.ndarray]]] = {}
    for src, dest in jobs:
        try:
            arr = pixel_array(load_image(src, channels=channels))
        except DataError as e:
            result.failed.append((src, getattr(e, "reason", str(e))))
            bar.update(1)
            continue
        group = pending.setdefault(arr.shape, [])
        group.append((src, dest, arr))
        if len(group) == batch_size:
            yield pending.pop(arr.shape)
    yield from pending.values()


def _run_batch(
    runner: _Runner, batch: list[tuple[Path, Path, np.ndarray]], result: TranslateResult
) -> None:
    try:
        out = translate_uint8(
            runner.run, np.stack([a for _, _, a in batch]), runner.multiple, runner.min_size
        )
    except (OnnxModelError, ValueError, RuntimeError) as e:
        if len(batch) > 1:  # retry one by one so one bad image cannot sink its batch-mates
            for item in batch:
                _run_batch(runner, [item], result)
            return
        result.failed.append((batch[0][0], f"translation failed: {e}"))
        return
    for (src, dest, _), pixels in zip(batch, out, strict=True):
        try:
            _save_image(pixels, dest)
            result.written.append(dest)
        except OSError as e:
            result.failed.append((src, f"cannot write {dest}: {e.strerror or e}"))


def translate(
    input: str | Path,
    output: str | Path,
    model: str | Path = "models/onnx",
    direction: str = "AtoB",
    backend: str = "onnx",
    batch_size: int = 4,
    overwrite: bool = False,
    threads: int = 0,
) -> TranslateResult:
    """Translate every image in ``input`` to ``output`` (same stem, ``.png``, same size)."""
    from tqdm import tqdm

    start = time.perf_counter()
    if batch_size < 1:
        raise TranslateError(f"batch_size must be >= 1, got {batch_size}")
    inputs = find_inputs(input)
    runner = load_runner(model, direction, backend, threads)
    plan = plan_outputs(inputs, Path(output), file_suffix(runner.out_channels))
    result = TranslateResult(runner.name, backend, direction)
    jobs, seen = [], {}
    for src, dest in plan.items():
        if dest.resolve() == src.resolve():
            result.failed.append((src, "output would replace its own input; choose another OUTPUT"))
        elif dest in seen:
            result.failed.append((src, f"output name {dest.name} is already used by {seen[dest]}"))
        elif dest.exists() and not overwrite:
            result.skipped.append(dest)
        else:
            seen[dest] = src
            jobs.append((src, dest))
    with tqdm(total=len(jobs), desc=f"translate {direction}", unit="img", leave=False) as bar:
        for batch in _batches(jobs, batch_size, result, bar, runner.in_channels):
            _run_batch(runner, batch, result)
            bar.update(len(batch))
    result.seconds = time.perf_counter() - start
    return result
