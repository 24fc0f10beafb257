"""ONNX export step: one self-describing ``.onnx`` per direction, gated on parity with PyTorch.

Exporter: ``torch.onnx.export(dynamo=True)`` (the default since torch 2.9; the TorchScript
exporter is deprecated). Both exporters pass parity on these generators, but the dynamo one
keeps the generators' size arithmetic (pad to the multiple, crop back) symbolic, so batch,
height and width are truly dynamic (checked at two or more sizes, one non-square), and it emits
a clean graph (one ``Pad`` per reflection pad instead of a Slice/Concat chain). It costs a few
seconds more per export. The network is unwrapped from DDP/``torch.compile`` and put in eval
mode, and the graph is checked for ops left in training mode.

Nothing is written to ``out_dir`` until every file has passed ``onnx.checker`` and the parity
gate: files are built in a hidden staging folder and moved in at the end, so a failed export
leaves ``out_dir`` exactly as it was.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan import tracking
from cyclegan.config import Config
from cyclegan.models.onnx_generator import LAYOUT, NORMALIZATION, OnnxGenerator, OnnxModelError
from cyclegan.storage import atomic_write_bytes

log = logging.getLogger(__name__)

DIRECTIONS = {"AtoB": ("G_AB", "A"), "BtoA": ("G_BA", "B")}
EXPORTER = "torch.onnx.export(dynamo=True)"
SAMPLE_HW = (64, 64)


class ExportError(RuntimeError):
    """The export cannot produce trustworthy files; nothing was written to the output folder."""


@dataclass
class ParityRow:
    """ONNX Runtime vs PyTorch (fp32) on one batch of inputs."""

    file: str
    direction: str
    precision: str
    source: str  # random | real
    height: int
    width: int
    batch: int
    max_abs: float
    mean_abs: float
    gate: str  # which statistic is gated: max (fp32) or mean (fp16/int8)
    limit: float

    @property
    def ok(self) -> bool:
        value = self.max_abs if self.gate == "max" else self.mean_abs
        return math.isfinite(value) and value <= self.limit


@dataclass
class ExportResult:
    out_dir: Path
    checkpoint: Path
    step: int
    opset: int
    files: dict[str, Path] = field(default_factory=dict)  # "AtoB", "AtoB.fp16", "BtoA.int8"...
    sizes: dict[str, int] = field(default_factory=dict)  # bytes per file key
    parity: list[ParityRow] = field(default_factory=list)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)  # per fp32 direction
    seconds: float = 0.0
    mlflow_run_id: str | None = None
    model_uri: str | None = None

    def worst(self, key: str) -> ParityRow:
        return max((r for r in self.parity if r.file == self.files[key].name), key=_gated_value)

    def summary(self) -> str:
        lines = [
            f"exported {self.checkpoint} (step {self.step}) -> {self.out_dir} "
            f"[opset {self.opset}, {self.seconds:.1f}s]",
            "| file | MB | max abs err | mean abs err | gate |",
            "|---|---|---|---|---|",
        ]
        for key, path in self.files.items():
            rows = [r for r in self.parity if r.file == path.name]
            w = self.worst(key)
            lines.append(
                f"| {path.name} | {self.sizes[key] / 1e6:.2f} | "
                f"{max(r.max_abs for r in rows):.2e} | {max(r.mean_abs for r in rows):.2e} | "
                f"{w.gate} <= {w.limit:g} ok |"
            )
        if self.model_uri:
            lines.append(f"MLflow model: {self.model_uri} (run {self.mlflow_run_id})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "checkpoint": str(self.checkpoint),
            "step": self.step,
            "opset": self.opset,
            "exporter": EXPORTER,
            "files": {k: str(p) for k, p in self.files.items()},
            "sizes": self.sizes,
            "parity": [asdict(r) for r in self.parity],
            "metadata": self.metadata,
            "seconds": round(self.seconds, 2),
            "model_uri": self.model_uri,
        }


def _gated_value(row: ParityRow) -> float:
    return row.max_abs if row.gate == "max" else row.mean_abs


def default_checkpoint(cfg: Config) -> Path:
    """``<train.out_dir>/checkpoints/best.pt``, else ``last.pt``."""
    from cyclegan.training.checkpoint import final_checkpoint

    found = final_checkpoint(cfg.train.out_dir)
    if found is not None:
        return found
    folder = Path(cfg.train.out_dir) / "checkpoints"
    raise ExportError(
        f"no checkpoint to export: neither {folder / 'best.pt'} nor {folder / 'last.pt'} exists. "
        "Train first (`cyclegan train`) or pass --checkpoint PATH"
    )


def unwrap(model: Any) -> Any:
    """The plain module inside DDP (``.module``) and/or ``torch.compile`` (``._orig_mod``)."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if inner is None or inner is model:
            return model
        model = inner


def _check_inference_graph(proto: Any, path: Path) -> None:
    """Refuse graphs with ops in training mode (batch-stat norms, live dropout)."""
    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.name == "training_mode" and attr.i == 1:
                raise ExportError(
                    f"{path.name}: node {node.name} ({node.op_type}) is in training mode"
                )
        if node.op_type == "Dropout":
            raise ExportError(f"{path.name}: the graph contains Dropout ({node.name})")


def _save_checked(proto: Any, path: Path, metadata: dict[str, str]) -> None:
    import onnx

    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, metadata)
    proto.doc_string = "CycleGAN generator; see metadata_props for input conventions."
    _check_inference_graph(proto, path)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # ValidationError, InferenceError
        raise ExportError(f"{path.name}: onnx.checker rejected the exported model: {e}") from e
    onnx.save_model(proto, str(path))


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's graph passes log every rewrite at INFO; keep the CLI output readable."""
    loggers = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(
    model: Any, path: str | Path, opset: int, metadata: dict[str, str], channels: int = 3
) -> None:
    """Export one generator (any wrapper) to ``path`` with dynamic batch, height and width."""
    import torch
    from torch.export import Dim

    net = unwrap(model)
    was_training = net.training
    net.eval()
    low = max(2, int(getattr(net, "min_size", 2)))
    dims = {0: Dim("batch", min=1), 2: Dim("height", min=low), 3: Dim("width", min=low)}
    device = next(net.parameters()).device
    sample = torch.rand(2, channels, *SAMPLE_HW, generator=torch.Generator().manual_seed(0))
    chatter = io.StringIO()
    try:
        with torch.no_grad(), contextlib.redirect_stdout(chatter), _quiet_exporter():
            program = torch.onnx.export(
                net,
                (sample.to(device) * 2 - 1,),
                input_names=["input"],
                output_names=["output"],
                opset_version=opset,
                dynamic_shapes=(dims,),
                dynamo=True,
                external_data=False,
            )
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportError(
            f"torch.onnx.export failed for {Path(path).name} (opset {opset}): {first}"
        ) from e
    finally:
        net.train(was_training)
    proto = program.model_proto
    got = {o.domain: o.version for o in proto.opset_import}.get("", 0)
    if got != opset:
        raise ExportError(
            f"{Path(path).name}: opset {opset} was asked for but the exporter produced opset "
            f"{got} (it cannot convert every op); set export.opset between 18 and 23"
        )
    _save_checked(proto, Path(path), metadata)


def to_fp16(proto: Any) -> Any:
    """fp16 weights and compute, fp32 input/output (Cast at both ends), with onnx itself.

    onnxconverter-common is not a dependency; these generators use only Conv, ConvTranspose,
    InstanceNormalization, Pad, Relu/LeakyRelu, Tanh, Add, Concat and int64 shape arithmetic,
    for which converting every float tensor is exact in meaning.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    g = m.graph

    def half(t: Any) -> Any:
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name)

    for i, t in enumerate(g.initializer):
        if t.data_type == TensorProto.FLOAT:
            g.initializer[i].CopyFrom(half(t))
    for node in g.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(half(attr.t))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    (inp,), (out,) = g.input, g.output
    for node in g.node:
        node.input[:] = [f"{inp.name}_fp16" if n == inp.name else n for n in node.input]
        node.output[:] = [f"{out.name}_fp16" if n == out.name else n for n in node.output]
    g.node.insert(0, helper.make_node("Cast", [inp.name], [f"{inp.name}_fp16"], to=10))
    g.node.append(helper.make_node("Cast", [f"{out.name}_fp16"], [out.name], to=1))
    del g.value_info[:]
    return m


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over a list of float NCHW batches."""

    def __init__(self, batches: list[np.ndarray], limit: int | None = None) -> None:
        images = [{"input": b[i : i + 1]} for b in batches for i in range(len(b))]
        self._it = iter(images[:limit])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_int8(
    src: Path, dst: Path, method: str, calibration: list[np.ndarray], limit: int | None = None
) -> None:
    """int8 weights: ``dynamic`` (ConvInteger, no data) or ``static`` (QLinearConv, calibrated
    on up to ``limit`` images of the float NCHW ``calibration`` batches)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    logging.disable(logging.WARNING)  # ORT logs a pre-processing hint on the root logger
    try:
        if method == "dynamic":
            quantize_dynamic(src, dst, weight_type=QuantType.QUInt8, per_channel=True)
        else:
            quantize_static(
                src,
                dst,
                _Calibration(calibration, limit),
                quant_format=QuantFormat.QOperator,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
    finally:
        logging.disable(logging.NOTSET)


def _real_images(cfg: Config, domain: str, n: int, hw: tuple[int, int]) -> np.ndarray | None:
    """Up to ``n`` processed test images of ``domain`` resized to ``hw``, as float NCHW."""
    from PIL import Image

    from cyclegan.data.errors import DataError
    from cyclegan.data.io import list_images, load_image
    from cyclegan.models.onnx_generator import to_model_input

    folder = Path(cfg.data.processed_dir) / f"test{domain}"
    if n == 0 or not folder.is_dir():
        return None
    arrays = []
    for path in list_images(folder):
        try:
            im = load_image(path)
        except DataError:
            continue
        arrays.append(np.asarray(im.resize((hw[1], hw[0]), Image.Resampling.BICUBIC)))
        if len(arrays) == n:
            break
    return to_model_input(np.stack(arrays)) if arrays else None


def parity_inputs(cfg: Config, domain: str, channels: int = 3) -> list[tuple[str, np.ndarray]]:
    """Fresh random batches and (when present) real test images, at every parity size."""
    rng = np.random.default_rng(cfg.seed)
    out = []
    for h, w in cfg.export.parity_sizes:
        out.append(("random", rng.uniform(-1, 1, (2, channels, h, w)).astype(np.float32)))
        real = _real_images(cfg, domain, cfg.export.parity_images, (h, w))
        if real is not None and real.shape[1] == channels:
            out.append(("real", real))
    return out


def _reference(model: Any, inputs: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
    import torch

    net = unwrap(model).eval()
    device = next(net.parameters()).device
    with torch.inference_mode():
        return [net(torch.from_numpy(x).to(device)).float().cpu().numpy() for _, x in inputs]


def check_parity(
    path: Path,
    direction: str,
    precision: str,
    inputs: list[tuple[str, np.ndarray]],
    refs: list[np.ndarray],
    gate: str,
    limit: float,
) -> list[ParityRow]:
    """Run ``path`` under ONNX Runtime on ``inputs`` and compare to the PyTorch ``refs``."""
    gen = OnnxGenerator(path)
    rows = []
    for (source, x), ref in zip(inputs, refs, strict=True):
        diff = np.abs(gen(x) - ref)
        rows.append(
            ParityRow(
                file=path.name,
                direction=direction,
                precision=precision,
                source=source,
                height=x.shape[2],
                width=x.shape[3],
                batch=x.shape[0],
                max_abs=float(diff.max()),
                mean_abs=float(diff.mean()),
                gate=gate,
                limit=limit,
            )
        )
    return rows


def _gate(rows: list[ParityRow], key: str) -> None:
    bad = [r for r in rows if not r.ok]
    if not bad:
        return
    w = max(bad, key=_gated_value)
    stat = "max" if w.gate == "max" else "mean"
    param = {"fp32": "tolerance", "fp16": "fp16_tolerance", "int8": "int8_tolerance"}[w.precision]
    raise ExportError(
        f"parity gate failed for {w.file}: {stat} |ONNX Runtime - PyTorch| = "
        f"{_gated_value(w):.3g} on {w.source} {w.height}x{w.width} input exceeds "
        f"export.{param}={w.limit:g}; no files were written. Check for ops exported in "
        f"training mode or a different opset, or raise export.{param} if this is expected"
    )


def _metadata(
    cfg: Config, train_cfg: Config, net: Any, direction: str, step: int, ckpt: Path
) -> dict[str, str]:
    """What a consumer of the file needs to use it right and to trace where it came from."""
    from cyclegan.models import generator_size_multiple

    multiple = math.lcm(generator_size_multiple(train_cfg.model), cfg.export.size_multiple)
    src = DIRECTIONS[direction][1]
    return {
        "direction": direction,
        "source_domain": src,
        "target_domain": "B" if src == "A" else "A",
        "generator": train_cfg.model.generator,
        "input_normalization": NORMALIZATION,
        "output_normalization": "tanh [-1,1]; uint8 = round((y+1)*127.5)",
        "layout": LAYOUT,
        "size_multiple": str(multiple),
        "min_size": str(int(getattr(unwrap(net), "min_size", 1))),
        "config_hash": train_cfg.hash(),
        "git_commit": tracking.git_commit(),
        "data_hash": tracking.dvc_data_hash(cfg.data.processed_dir),
        "checkpoint_step": str(step),
        "checkpoint": ckpt.name,
        "opset": str(cfg.export.opset),
        "precision": "fp32",
        "exporter": EXPORTER,
    }


def _variants(
    cfg: Config,
    stage: Path,
    direction: str,
    inputs: list[tuple[str, np.ndarray]],
    refs: list[np.ndarray],
    meta: dict[str, str],
) -> dict[str, tuple[Path, list[ParityRow]]]:
    """The optional fp16 / int8 files of one direction, each checked on the same inputs."""
    import onnx

    ecfg, out = cfg.export, {}
    fp32 = stage / f"generator_{direction}.onnx"
    if ecfg.fp16:
        path = stage / f"generator_{direction}.fp16.onnx"
        _save_checked(to_fp16(onnx.load(str(fp32))), path, {**meta, "precision": "fp16"})
        rows = check_parity(path, direction, "fp16", inputs, refs, "mean", ecfg.fp16_tolerance)
        out[f"{direction}.fp16"] = (path, rows)
    if ecfg.int8:
        path = stage / f"generator_{direction}.int8.onnx"
        calib = [x for source, x in inputs if source == "real"] or [x for _, x in inputs]
        quantize_int8(fp32, path, ecfg.int8_method, calib, ecfg.calibration_images)
        precision = f"int8-{ecfg.int8_method}"
        _save_checked(onnx.load(str(path)), path, {**meta, "precision": precision})
        rows = check_parity(path, direction, "int8", inputs, refs, "mean", ecfg.int8_tolerance)
        out[f"{direction}.int8"] = (path, rows)
    return out


def retarget(proto: Any, net: Any) -> Any | None:
    """``proto`` (traced from a twin network) carrying ``net``'s weights, or None if unsure.

    G_AB and G_BA share one architecture, so the second direction reuses the first one's
    graph instead of tracing again (the slow part of export). Every float state-dict entry must
    be an initializer of the same shape; the parity gate still checks the result.
    """
    import onnx
    from onnx import numpy_helper

    state = {k: v for k, v in unwrap(net).state_dict().items() if v.is_floating_point()}
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    inits = {t.name: t for t in m.graph.initializer}
    for name, value in state.items():
        t = inits.get(name)
        if t is None or tuple(t.dims) != tuple(value.shape):
            return None
        arr = value.detach().cpu().numpy().astype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
        t.CopyFrom(numpy_helper.from_array(arr, name))
    return m


def _fp32_file(
    net: Any,
    path: Path,
    meta: dict[str, str],
    cfg: Config,
    channels: int,
    template: Path | None,
    inputs: list[tuple[str, np.ndarray]],
    refs: list[np.ndarray],
) -> list[ParityRow]:
    """Write the fp32 file (weight swap into ``template`` when possible) and its parity rows."""
    import onnx

    args = (path, meta["direction"], "fp32", inputs, refs, "max", cfg.export.tolerance)
    proto = retarget(onnx.load(str(template)), net) if template is not None else None
    if proto is not None:
        _save_checked(proto, path, meta)
        rows = check_parity(*args)
        if all(r.ok for r in rows):
            return rows
        log.warning("%s: the reused graph failed parity; tracing this direction", path.name)
    export_onnx(net, path, cfg.export.opset, meta, channels=channels)
    return check_parity(*args)


def _export_direction(
    cfg: Config,
    train_cfg: Config,
    net: Any,
    direction: str,
    stage: Path,
    template: Path | None,
    result: ExportResult,
) -> Path:
    """Export, check and gate one direction's files into ``stage`` (recorded in ``result``)."""
    meta = _metadata(cfg, train_cfg, net, direction, result.step, result.checkpoint)
    path = stage / f"generator_{direction}.onnx"
    channels = train_cfg.model.input_nc
    inputs = parity_inputs(cfg, DIRECTIONS[direction][1], channels)
    refs = _reference(net, inputs)
    rows = _fp32_file(net, path, meta, cfg, channels, template, inputs, refs)
    _gate(rows, direction)
    found = {direction: (path, rows), **_variants(cfg, stage, direction, inputs, refs, meta)}
    for key, (p, r) in found.items():
        _gate(r, key)
        result.files[key], result.sizes[key] = p, p.stat().st_size
        result.parity.extend(r)
    result.metadata[direction] = meta
    return path


def _commit(stage: Path, out: Path, result: ExportResult) -> None:
    """Move the staged files into ``out``; stale generator files of other variants go."""
    out.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in result.files.values()}
    ours = {f"generator_{d}{v}.onnx" for d in DIRECTIONS for v in ("", ".fp16", ".int8")}
    for stale in (ours - names) & {p.name for p in out.iterdir()}:
        (out / stale).unlink()  # e.g. an fp16 file from an earlier export with export.fp16=true
    for key, p in result.files.items():
        os.replace(p, out / p.name)
        result.files[key] = out / p.name
    result.out_dir = out


def _metrics(result: ExportResult) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, path in result.files.items():
        rows = [r for r in result.parity if r.file == path.name]
        out[key] = {
            "max_abs": max(r.max_abs for r in rows),
            "mean_abs": max(r.mean_abs for r in rows),
            "megabytes": round(result.sizes[key] / 1e6, 3),
        }
    return out


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _training_run_id(cfg: Config, ckpt: Path) -> str | None:
    """The MLflow run that trained ``ckpt`` (its run folder's id file), if it is in this store."""
    import mlflow

    for folder in (ckpt.parent.parent, Path(cfg.train.out_dir)):
        f = folder / tracking.RUN_ID_FILE
        if f.is_file():
            run_id = f.read_text().strip()
            try:
                mlflow.tracking.MlflowClient().get_run(run_id)
                return run_id
            except Exception:  # another store, or a deleted run: start a new one
                return None
    return None


def _log_mlflow(cfg: Config, result: ExportResult) -> None:
    """Log the fp32 files as one pyfunc model (+ parity metrics) into the training run.

    It is not registered here: ``cyclegan register`` adds the evidence (metrics, lineage tags)
    that a registry version must carry.
    """
    import mlflow

    from cyclegan import serving

    tracking.setup(cfg.tracking)
    run_id = _training_run_id(cfg, result.checkpoint)
    name = f"export-{result.metadata['AtoB']['config_hash']}"
    with tracking.mlflow_run(cfg.tracking, run_name=name, run_id=run_id) as run:
        files = {d: result.files[d] for d in DIRECTIONS}
        info = serving.log_onnx_model(files)  # registering is the register step's job
        metrics = {f"export.{k}.{s}": v for k, m in _metrics(result).items() for s, v in m.items()}
        mlflow.log_metrics(metrics)
        tracking.log_dict_artifact(result.to_dict(), "export/export.json")
        result.mlflow_run_id, result.model_uri = run.info.run_id, info.model_uri


def export(
    cfg: Config, checkpoint: str | Path | None = None, out_dir: str | Path | None = None
) -> ExportResult:
    """Export both generators of a checkpoint to ONNX, gate on parity, then log to MLflow."""
    from cyclegan.training.checkpoint import load_checkpoint, load_generators

    start = time.perf_counter()
    if cfg.tracking.enabled:
        tracking.check_reachable(cfg.tracking.uri, cfg.tracking.timeout_s)  # fail before work
    ckpt = Path(checkpoint) if checkpoint else default_checkpoint(cfg)
    train_cfg, g_ab, g_ba = load_generators(ckpt, device="cpu")
    step = int(load_checkpoint(ckpt)["step"])
    out = Path(out_dir or cfg.export.out_dir)
    result = ExportResult(out, ckpt, step, cfg.export.opset)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        template = _export_direction(cfg, train_cfg, g_ab, "AtoB", stage, None, result)
        _export_direction(cfg, train_cfg, g_ba, "BtoA", stage, template, result)
        _commit(stage, out, result)
    except OnnxModelError as e:
        raise ExportError(f"the exported file does not load in ONNX Runtime: {e}") from e
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    result.seconds = time.perf_counter() - start
    _write_json(out / "export.json", result.to_dict())
    _write_json(Path(cfg.export.metrics_file), _metrics(result))
    if cfg.tracking.enabled:
        _log_mlflow(cfg, result)
    result.seconds = time.perf_counter() - start
    return result
