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
    # archive-bomb guards for `data import` / `data fetch`: unpacked size / archive size, and
    # the total unpacked bytes (images are already compressed: real datasets unpack ~1:1)
    max_expansion_ratio: float = 200.0
    max_extract_bytes: int = 50 * 2**30

    def __post_init__(self) -> None:
        _check(bool(self.source), "data.source", "must not be empty")
        _in_range(self.min_train, "data.min_train", 0)
        _in_range(self.min_test, "data.min_test", 0)
        _in_range(self.min_image_size, "data.min_image_size", 1)
        _in_range(self.max_image_pixels, "data.max_image_pixels", 1)
        _in_range(self.max_expansion_ratio, "data.max_expansion_ratio", 1)
        _in_range(self.max_extract_bytes, "data.max_extract_bytes", 1)


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


# Registry names of the networks ``cyclegan.models`` builds. They live here, in the lowest layer,
# so params are validated when they load (before any command starts work) without importing
# torch; ``cyclegan.models`` registers one builder per name and a test keeps the two equal.
GENERATOR_NAMES = (
    "resnet_6blocks",
    "resnet_9blocks",
    "resnet_9blocks_attn",
    "resnet_9blocks_ds",
    "unet_128",
    "unet_256",
)
DISCRIMINATOR_NAMES = ("patchgan", "patchgan_70", "pixel", "multiscale")


def _registry_name(kind: str, name: str, valid: tuple[str, ...]) -> None:
    _check(
        name in valid,
        f"model.{kind}",
        f"unknown {kind} {name!r} (valid: {', '.join(sorted(valid))})",
    )


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
        _registry_name("generator", self.generator, GENERATOR_NAMES)
        _registry_name("discriminator", self.discriminator, DISCRIMINATOR_NAMES)
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
    # Optional generator losses from the literature (0 = off: not computed at all).
    lambda_ssim: float = 0.0  # (1 - SSIM) of each cycle reconstruction vs its input
    lambda_fft: float = 0.0  # L1 between Fourier amplitude spectra (reconstruction vs input)
    lambda_fm: float = 0.0  # discriminator feature matching (fake vs real, every D layer)
    lambda_perceptual: float = 0.0  # VGG16 feature (content) + Gram-matrix (style) loss
    vgg_weights: str = ""  # VGG16 ImageNet weights: local path or s3:// URI (else hub cache)
    vgg_download: bool = False  # allow downloading vgg16-397923af.pth when not found locally

    def __post_init__(self) -> None:
        for key in ("lambda_ssim", "lambda_fft", "lambda_fm", "lambda_perceptual"):
            _in_range(getattr(self, key), f"loss.{key}", 0.0)
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
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"  # auto: measured (training.precision)
    channels_last: bool | Literal["auto"] = False  # auto: measured, see training.precision
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
    # progressive resizing: [[fraction of steps, crop size], ...] from 0.0; [] = fixed size
    progressive: tuple[tuple[float, int], ...] = ()
    init_from: str = ""  # checkpoint whose network weights start a fresh run (fine-tuning)
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
        _check_progressive(self.progressive)


def _check_progressive(stages: tuple[tuple[float, int], ...]) -> None:
    """Fractions start at 0.0 and increase below 1.0; sizes increase and are >= 8."""
    for i, (frac, size) in enumerate(stages):
        key = f"train.progressive[{i}]"
        _in_range(frac, f"{key}[0]", 0.0)
        _check(frac < 1.0, f"{key}[0]", f"a fraction of train.steps must be < 1.0, got {frac}")
        _in_range(size, f"{key}[1]", 8)
        if i == 0:
            _check(frac == 0.0, f"{key}[0]", f"the first stage must start at 0.0, got {frac}")
        else:
            prev_frac, prev_size = stages[i - 1]
            _check(
                frac > prev_frac,
                f"{key}[0]",
                f"fractions must increase, got {frac} after {prev_frac}",
            )
            _check(
                size > prev_size, f"{key}[1]", f"sizes must increase, got {size} after {prev_size}"
            )


@dataclass(frozen=True)
class TrackingConfig:
    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"  # or http(s)://server for the cluster
    experiment: str = "cyclegan"
    registered_model: str = "cyclegan"
    timeout_s: float = 10.0  # fail fast when the tracking server is unreachable
    retry_s: float = 5.0  # server lost mid-run: probe it this often, buffer records meanwhile
    flush_wait_s: float = 60.0  # at the end, wait this long for a lost server before keeping
    # the buffered records locally (upload later with `cyclegan tracking sync RUN_DIR`)

    def __post_init__(self) -> None:
        _in_range(self.timeout_s, "tracking.timeout_s", 0, lo_open=True)
        _in_range(self.retry_s, "tracking.retry_s", 0, lo_open=True)
        _in_range(self.flush_wait_s, "tracking.flush_wait_s", 0)


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

    def __post_init__(self) -> None:
        stages = self.train.progressive
        if stages:
            last, crop = stages[-1][1], self.transforms.crop_size
            _check(
                last == crop,
                f"train.progressive[{len(stages) - 1}][1]",
                f"the last stage must train at transforms.crop_size ({crop}), got {last}",
            )
        rgb = self.model.input_nc == 3 and self.model.output_nc == 3
        _check(
            rgb or self.transforms.color_jitter == 0,
            "transforms.color_jitter",
            f"colour jitter needs RGB domains, but model.input_nc={self.model.input_nc} and "
            f"model.output_nc={self.model.output_nc}; set it to 0",
        )

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


_BOMS = [  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
]


def _not_utf8(path: Path, found: str, enc: str) -> ConfigError:
    return ConfigError(
        f"{path}: {found}; params files must be UTF-8: re-save it as UTF-8 "
        f"(e.g. `iconv -f {enc} -t UTF-8 OLD > NEW`, or your editor's encoding menu)"
    )


def _params_text(path: Path) -> str:
    """The file as UTF-8 text; any other encoding is named (YAML parsers would garble it)."""
    data = path.read_bytes()
    for bom, enc in _BOMS:
        if data.startswith(bom):
            raise _not_utf8(path, f"saved as {enc} (byte-order mark {bom.hex(' ')})", enc)
    if b"\x00" in data[:200]:
        found = "contains NUL bytes (saved as UTF-16 without a byte-order mark?)"
        raise _not_utf8(path, found, "UTF-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        found = f"not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}; Latin-1?)"
        raise _not_utf8(path, found, "LATIN1") from e


class _ParamsLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys (YAML itself keeps the last silently)."""

    def construct_document(self, node: yaml.Node) -> Any:
        _refuse_duplicates(node, "")
        return super().construct_document(node)


def _refuse_duplicates(node: yaml.Node, prefix: str) -> None:
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicates(item, f"{prefix}[{i}]")
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[Any, int] = {}
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        dotted = f"{prefix}.{key}" if prefix else str(key)
        line = key_node.start_mark.line + 1
        if key is not None and key != "<<" and key in seen:
            raise ConfigError(
                f"{dotted}: duplicate key on lines {seen[key]} and {line} of "
                f"{key_node.start_mark.name} (YAML would silently keep the last); remove one"
            )
        if key is not None:
            seen[key] = line
        _refuse_duplicates(value_node, dotted)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """One line: where and what (PyYAML's own text spans several lines with code excerpts)."""
    if not isinstance(e, yaml.MarkedYAMLError) or e.problem_mark is None:
        return " ".join(str(e).split())
    mark = e.problem_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: {e.problem}"
    if e.context and e.context_mark is not None:
        where += f" ({e.context} started on line {e.context_mark.line + 1})"
    return where


def read_params_file(path: Path) -> Any:
    """Parse a params file strictly: UTF-8 only, no duplicate keys, not empty."""
    text = _params_text(path)
    loader = _ParamsLoader(text)
    loader.name = str(path)
    try:
        node = loader.get_single_node()
        raw = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(e)}") from e
    finally:
        loader.dispose()
    if node is None:  # nothing but blanks and comments: refuse rather than run on defaults
        raise ConfigError(
            f"{path}: the file is empty (or only comments), so every param would silently take "
            "its default; write the keys you mean, or `{}` to use all defaults on purpose"
        )
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load ``params.yaml`` (or defaults when ``path`` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"params file not found: {p} (pass --params FILE)")
        raw = read_params_file(p)
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
