"""Typed configuration: nested frozen dataclasses loaded from ``params.yaml``.

``params.yaml`` is the single source of every hyperparameter and path. Every error names the
dotted key (``train.batch_size``) so a user can fix the file without reading code. Overrides use
the ``dvc exp run -S`` spelling: ``--set train.steps=100``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml


class ConfigError(ValueError):
    """A params file or override is invalid; the message names the dotted key."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _in_range(
    value: float, key: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False
) -> None:
    if lo is not None:
        ok = value > lo if lo_open else value >= lo
        _check(ok, key, f"must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None:
        _check(value <= hi, key, f"must be <= {hi}, got {value}")


@dataclass(frozen=True)
class SynthConfig:
    """Procedural synthetic benchmark with ground truth (the embedded default dataset)."""

    train: int = 200
    test: int = 40
    size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        _in_range(self.train, "data.synth.train", 1)
        _in_range(self.test, "data.synth.test", 1)
        _in_range(self.size, "data.synth.size", 16, 1024)


@dataclass(frozen=True)
class DataConfig:
    """Where raw data comes from and where each stage writes."""

    source: str = "synth"  # synth | local folder | .zip/.tar.gz | s3://bucket/prefix | URL | name
    raw_dir: str = "data/raw"
    processed_dir: str = "data/processed"
    synth: SynthConfig = field(default_factory=SynthConfig)
    min_train: int = 1  # a run fails only when a train split has fewer usable images
    min_test: int = 1
    min_image_size: int = 16  # images smaller than this on either side are skipped
    max_image_pixels: int = 89_478_485  # decompression-bomb guard (Pillow's default)

    def __post_init__(self) -> None:
        _check(bool(self.source), "data.source", "must not be empty")
        _in_range(self.min_train, "data.min_train", 0)
        _in_range(self.min_test, "data.min_test", 0)
        _in_range(self.min_image_size, "data.min_image_size", 1)
        _in_range(self.max_image_pixels, "data.max_image_pixels", 1)


@dataclass(frozen=True)
class PreprocessConfig:
    """The artefact training consumes: validated, resized, RGB images plus a manifest."""

    size: int = 64  # images are resized so that both sides equal this (square)

    def __post_init__(self) -> None:
        _in_range(self.size, "preprocess.size", 16, 4096)


@dataclass(frozen=True)
class TransformConfig:
    """Training augmentation; eval uses a deterministic resize to ``crop_size``."""

    load_size: int = 72
    crop_size: int = 64
    flip_prob: float = 0.5
    color_jitter: float = 0.0  # strength for brightness/contrast/saturation; 0 disables

    def __post_init__(self) -> None:
        _in_range(self.crop_size, "transforms.crop_size", 8)
        _check(
            self.load_size >= self.crop_size,
            "transforms.load_size",
            f"must be >= transforms.crop_size ({self.crop_size}), got {self.load_size}",
        )
        _in_range(self.flip_prob, "transforms.flip_prob", 0.0, 1.0)
        _in_range(self.color_jitter, "transforms.color_jitter", 0.0, 1.0)


@dataclass(frozen=True)
class ModelConfig:
    """Networks by registry name, with the reference implementation's defaults."""

    generator: str = "resnet_6blocks"
    discriminator: str = "patchgan"
    n_layers_d: int = 3  # 3 = the 70x70 PatchGAN
    num_scales: int = 2  # multiscale discriminator only
    ngf: int = 64
    ndf: int = 64
    norm: Literal["instance", "batch", "none"] = "instance"
    dropout: bool = False
    input_nc: int = 3
    output_nc: int = 3
    init_gain: float = 0.02

    def __post_init__(self) -> None:
        _in_range(self.n_layers_d, "model.n_layers_d", 1, 6)
        _in_range(self.num_scales, "model.num_scales", 1, 4)
        _in_range(self.ngf, "model.ngf", 1)
        _in_range(self.ndf, "model.ndf", 1)
        _in_range(self.input_nc, "model.input_nc", 1)
        _in_range(self.output_nc, "model.output_nc", 1)
        _in_range(self.init_gain, "model.init_gain", 0.0, lo_open=True)


@dataclass(frozen=True)
class LossConfig:
    gan_mode: Literal["lsgan", "vanilla", "hinge", "wgangp"] = "lsgan"
    lambda_A: float = 10.0
    lambda_B: float = 10.0
    lambda_identity: float = 0.5  # multiplied by lambda_A / lambda_B, as in the reference
    lambda_gp: float = 10.0  # wgangp only
    pool_size: int = 50

    def __post_init__(self) -> None:
        _in_range(self.lambda_A, "loss.lambda_A", 0.0)
        _in_range(self.lambda_B, "loss.lambda_B", 0.0)
        _in_range(self.lambda_identity, "loss.lambda_identity", 0.0)
        _in_range(self.lambda_gp, "loss.lambda_gp", 0.0)
        _in_range(self.pool_size, "loss.pool_size", 0)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    schedule: Literal["linear", "cosine", "step"] = "linear"
    decay_start: float = 0.5  # linear: fraction of steps at constant lr before decay
    step_size: int = 1000  # step: iterations between decays
    gamma: float = 0.5  # step: decay factor
    warmup_steps: int = 0  # cosine: linear warm-up iterations

    def __post_init__(self) -> None:
        _in_range(self.lr, "optim.lr", 0.0, lo_open=True)
        _in_range(self.beta1, "optim.beta1", 0.0, 1.0)
        _in_range(self.beta2, "optim.beta2", 0.0, 1.0)
        _in_range(self.decay_start, "optim.decay_start", 0.0, 1.0)
        _in_range(self.step_size, "optim.step_size", 1)
        _in_range(self.gamma, "optim.gamma", 0.0, 1.0, lo_open=True)
        _in_range(self.warmup_steps, "optim.warmup_steps", 0)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 200
    batch_size: int = 1  # per process; global batch = batch_size * world size
    num_workers: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"  # auto: see resolve_amp()
    channels_last: bool = False
    compile: bool = False
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    log_every: int = 10
    sample_every: int = 50
    checkpoint_every: int = 50
    keep_last: int = 3
    eval_every: int = 0  # 0 = no in-training evaluation
    out_dir: str = "runs/train"
    resume: bool = True
    collapse_window: int = 50  # steps a discriminator loss must stay near zero to warn
    nodes: int = 1  # > 1: the Kubeflow train step runs a multi-node TrainJob (torchrun per node)

    def __post_init__(self) -> None:
        _in_range(self.steps, "train.steps", 1)
        _in_range(self.batch_size, "train.batch_size", 1)
        _in_range(self.num_workers, "train.num_workers", 0)
        _check(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            "train.device",
            f"must be auto, cpu, cuda or cuda:N, got {self.device!r}",
        )
        _in_range(self.threads, "train.threads", 0)
        for key in ("log_every", "sample_every", "checkpoint_every", "keep_last"):
            _in_range(getattr(self, key), f"train.{key}", 1)
        _in_range(self.eval_every, "train.eval_every", 0)
        _in_range(self.collapse_window, "train.collapse_window", 1)
        _in_range(self.nodes, "train.nodes", 1)


@dataclass(frozen=True)
class TrackingConfig:
    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"  # or http(s)://server for the cluster
    experiment: str = "cyclegan"
    registered_model: str = "cyclegan"
    timeout_s: float = 10.0  # fail fast when the tracking server is unreachable


@dataclass(frozen=True)
class EvalConfig:
    out_dir: str = "metrics"
    report_dir: str = "reports/eval"
    fid: bool = True  # computed only when Inception weights resolve; otherwise skipped + noted
    lpips: bool = True
    lpips_net: Literal["alex", "squeeze", "vgg"] = "alex"
    inception_weights: str = ""  # explicit local path or s3:// URI
    lpips_weights: str = ""  # explicit local path or s3:// URI for the LPIPS linear layers
    lpips_backbone_weights: str = ""  # explicit path or s3:// URI for the backbone
    kid_subset_size: int = 1000  # clipped to the smaller set
    bootstrap: int = 1000
    ci: float = 0.95
    seed: int = 0
    batch_size: int = 16
    classifier_steps: int = 300
    report_images: int = 8
    max_images: int = 0  # 0 = full test sets (the documented protocol)
    require_weights: bool = False  # true: missing FID/KID/LPIPS weights fail the step (exit 2)
    download: bool = True  # try the public URL when weights are not local/cached/on S3
    curve: bool = True  # score every step_*.pt in the run folder -> metrics/eval_curve.csv

    def __post_init__(self) -> None:
        _in_range(self.kid_subset_size, "evaluate.kid_subset_size", 2)
        _in_range(self.bootstrap, "evaluate.bootstrap", 0)
        _in_range(self.ci, "evaluate.ci", 0.0, 1.0, lo_open=True)
        _in_range(self.batch_size, "evaluate.batch_size", 1)
        _in_range(self.classifier_steps, "evaluate.classifier_steps", 0)
        _in_range(self.report_images, "evaluate.report_images", 0)
        _in_range(self.max_images, "evaluate.max_images", 0)


@dataclass(frozen=True)
class ExportConfig:
    """ONNX export: one file per direction, gated on ONNX Runtime vs PyTorch parity."""

    out_dir: str = "models/onnx"
    opset: int = 18  # 18..23; ONNX Runtime 1.32 runs all of them
    tolerance: float = 1e-3  # max abs error allowed between ONNX Runtime and PyTorch (fp32)
    # (height, width): square, non-square, and odd (not a multiple of the network's stride)
    parity_sizes: tuple[tuple[int, int], ...] = ((64, 64), (96, 64), (67, 45))
    parity_images: int = 4  # real test images per direction in the parity check (0 = none)
    fp16: bool = False  # also write generator_<dir>.fp16.onnx (fp16 weights and compute)
    fp16_tolerance: float = 0.01  # gate on MEAN abs error of the fp16 file vs PyTorch fp32
    int8: bool = False  # also write generator_<dir>.int8.onnx (ONNX Runtime quantization)
    int8_method: Literal["dynamic", "static"] = "dynamic"  # static = calibrated QLinearConv
    int8_tolerance: float = 0.05  # gate on MEAN abs error of the int8 file vs PyTorch fp32
    calibration_images: int = 16  # static int8: images (real when present) for calibration
    size_multiple: int = 4  # inputs are padded to lcm(this, the generator's own multiple)
    metrics_file: str = "metrics/export.json"  # parity/size figures for `dvc metrics`

    def __post_init__(self) -> None:
        # the dynamo exporter cannot down-convert Pad below 18 (it would silently emit 18)
        _in_range(self.opset, "export.opset", 18, 23)
        _in_range(self.tolerance, "export.tolerance", 0.0, lo_open=True)
        _check(len(self.parity_sizes) >= 1, "export.parity_sizes", "needs at least one size")
        for i, hw in enumerate(self.parity_sizes):
            _check(
                len(hw) == 2 and all(v >= 8 for v in hw),
                f"export.parity_sizes[{i}]",
                f"must be [height, width] with both >= 8, got {list(hw)}",
            )
        _check(
            any(h != w for h, w in self.parity_sizes),
            "export.parity_sizes",
            f"needs a non-square [height, width] (odd shapes are where exports break), "
            f"got {[list(hw) for hw in self.parity_sizes]}",
        )
        _in_range(self.parity_images, "export.parity_images", 0)
        _in_range(self.fp16_tolerance, "export.fp16_tolerance", 0.0, lo_open=True)
        _in_range(self.int8_tolerance, "export.int8_tolerance", 0.0, lo_open=True)
        _in_range(self.calibration_images, "export.calibration_images", 1)
        _in_range(self.size_multiple, "export.size_multiple", 1)
        _check(bool(self.metrics_file), "export.metrics_file", "must not be empty")


@dataclass(frozen=True)
class GateConfig:
    """One promotion gate on a metric of ``eval.json`` (dotted path, e.g. ``AtoB.l1_to_gt``)."""

    metric: str = ""
    direction: Literal["higher", "lower"] = "lower"  # which way is better
    min_margin: float | None = 0.0  # candidate mean must beat the champion's by this (null: no
    # comparison); negative = a tolerated regression
    threshold: float | None = None  # absolute bound on the candidate mean (null = none)
    ci_must_clear: bool = False  # the candidate's whole CI must be better than champion's mean


@dataclass(frozen=True)
class PromoteConfig:
    """Gates a registered version must pass to become ``@champion``."""

    gates: tuple[GateConfig, ...] = (
        GateConfig("AtoB.l1_to_gt", "lower", 0.0),
        GateConfig("BtoA.l1_to_gt", "lower", 0.0),
    )
    lock_timeout_s: float = 60.0  # wait this long for a concurrent promotion; older locks are stale

    def __post_init__(self) -> None:
        _check(len(self.gates) >= 1, "promote.gates", "needs at least one gate")
        seen: set[str] = set()
        for i, g in enumerate(self.gates):
            key = f"promote.gates[{i}]"
            _check(bool(g.metric), f"{key}.metric", "must not be empty (e.g. AtoB.l1_to_gt)")
            _check(g.metric not in seen, f"{key}.metric", f"{g.metric!r} is gated twice")
            seen.add(g.metric)
            _check(
                g.min_margin is not None or g.threshold is not None,
                key,
                "needs min_margin (vs the champion) or threshold (absolute), or both",
            )
            _check(
                not g.ci_must_clear or g.min_margin is not None,
                f"{key}.ci_must_clear",
                "needs min_margin (it compares with the champion)",
            )
        _in_range(self.lock_timeout_s, "promote.lock_timeout_s", 0.0, lo_open=True)


@dataclass(frozen=True)
class Config:
    """The whole of ``params.yaml``."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    transforms: TransformConfig = field(default_factory=TransformConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def hash(self) -> str:
        """A stable short hash of the whole config (goes into checkpoints and ONNX metadata)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


T = TypeVar("T")


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict/list tree (tuples become lists, as in YAML)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    return obj


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (MLflow params, DVC params lists)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


_SCI = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; the only conversion is int -> float."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        _check(isinstance(value, dict), key, f"must be a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        _check(value in choices, key, f"must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: must be {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        _check(isinstance(value, list | tuple), key, f"must be a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        _check(len(value) == len(args), key, f"must have {len(args)} items, got {len(value)}")
        pairs = enumerate(zip(value, args, strict=True))
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in pairs)
    if tp is type(None):
        _check(value is None, key, f"must be null, got {value!r}")
        return None
    if tp is bool:
        _check(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        _check(ok, key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _SCI.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads `1e-3` (no dot) as a string
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        _check(ok, key, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        _check(isinstance(value, str), key, f"must be a string, got {value!r}")
        return value
    return value


def _build(cls: type[T], raw: dict[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for k in raw:
        if k not in names:
            where = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(f"{where}: unknown key (valid keys: {', '.join(sorted(names))})")
    kwargs = {}
    for k, v in raw.items():
        key = f"{prefix}.{k}" if prefix else k
        kwargs[k] = _coerce(v, hints[k], key)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.steps=100"`` -> ``("train.steps", 100)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected dotted.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    return key, yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set a.b=v`` overrides to a raw params tree (a deep copy is returned)."""
    out = json.loads(json.dumps(raw))
    for text in overrides:
        key, value = parse_override(text)
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{'.'.join(parts[: i + 1])}: is not a section, cannot set {key}")
            node = nxt
        node[parts[-1]] = value
    return out


def config_from_dict(raw: dict[str, Any] | None) -> Config:
    return _build(Config, raw or {})


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load ``params.yaml`` (or defaults when ``path`` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"params file not found: {p} (pass --params FILE)")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: top level must be a mapping, got {type(raw).__name__}")
    return config_from_dict(apply_overrides(raw, overrides or []))


def config_from_yaml(text: str, overrides: list[str] | None = None) -> Config:
    """A config from params YAML text plus overrides: what the Kubeflow components receive (the
    pipeline embeds ``params.yaml`` at compile time, so a run never depends on the image's copy)."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"params: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"params: top level must be a mapping, got {type(raw).__name__}")
    return config_from_dict(apply_overrides(raw, overrides or []))


def config_to_yaml(cfg: Config) -> str:
    """The inverse of :func:`config_from_yaml` (tuples become lists, as in ``params.yaml``)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
