"""The ``evaluate`` step: score a trained model on the test splits, both directions.

Weight-free metrics always run (L1/PSNR/SSIM to ground truth with the identity baseline, cycle
consistency, domain-classifier accuracy); FID/KID and LPIPS run when their weight files resolve
(see ``cyclegan.evaluation.weights``) and are otherwise skipped with the reason recorded and
printed, unless ``evaluate.require_weights`` is true (then the step fails with exit 2). Outputs:
``<evaluate.out_dir>/eval.json`` (DVC metrics), ``eval_protocol.json``, ``eval_per_image.csv``,
``eval_curve.csv`` (DVC plots) and a PNG + HTML report in ``evaluate.report_dir``; the same
numbers and pictures go to MLflow.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cyclegan.config import Config
from cyclegan.data.channels import describe, domain_channels
from cyclegan.evaluation import fid as fidmod
from cyclegan.evaluation import report
from cyclegan.evaluation.bootstrap import bootstrap_ci
from cyclegan.evaluation.classifier import TrainedClassifier, train_classifier
from cyclegan.evaluation.errors import EvalError
from cyclegan.evaluation.images import ImageSet, load_folder, load_ground_truth
from cyclegan.evaluation.lpips import LpipsScorer, load_lpips
from cyclegan.evaluation.metrics import as_rgb, to_uint8
from cyclegan.evaluation.suite import (
    DIRECTIONS,
    Direction,
    Generator,
    estimates,
    lpips_metrics,
    means,
    run_direction,
    weight_free,
)
from cyclegan.evaluation.weights import WeightsError

TRAIN_MAX_IMAGES = 2000  # per domain, for the classifier and the mean-image baseline
CURVE_KEYS = ("l1_to_gt", "cycle_l1", "domain_acc")
SUMMARY_KEYS = (
    "l1_to_gt",
    "identity_l1_to_gt",
    "l1_to_gt_gain",
    "mean_target_l1_to_gt",
    "l1_to_gt_gain_vs_mean",
    "domain_acc",
    "identity_domain_acc",
    "domain_acc_gain",
    "cycle_l1",
    "lpips_content",
    "lpips_to_gt",
    "fid",
    "kid",
)


@dataclass
class EvalResult:
    """What ``cyclegan evaluate`` prints and the pipeline records."""

    metrics: dict[str, Any]
    protocol: dict[str, Any]
    paths: dict[str, Path]
    notes: list[str] = field(default_factory=list)  # skipped metrics and small-set warnings
    model: str = ""
    data: str = ""
    mlflow_run_id: str | None = None

    def summary(self) -> str:
        lines = [f"evaluated {self.model} on {self.data}"]
        for name in DIRECTIONS:
            values = self.metrics.get(name, {})
            lines += [f"  {name} {k}: {_text(values[k])}" for k in SUMMARY_KEYS if k in values]
        for key, value in self.metrics.get("classifier", {}).items():
            lines.append(f"  classifier {key}: {_text(value)}")
        lines += [f"note: {n.splitlines()[0]}" for n in self.notes]  # full text: protocol
        lines += [f"wrote {p}" for p in self.paths.values()]
        if self.mlflow_run_id:
            lines.append(f"MLflow run: {self.mlflow_run_id}")
        return "\n".join(lines)


def _text(v: Any) -> str:
    if isinstance(v, dict) and "lo" in v:
        return f"{v['mean']:.4f} [{v['lo']:.4f}, {v['hi']:.4f}] (n={v['n']})"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_text(x)}" for k, x in v.items())
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _note(notes: list[str], msg: str) -> None:
    notes.append(msg)
    print(f"evaluate: {msg}", file=sys.stderr)


def default_model(cfg: Config) -> Path:
    """``<train.out_dir>/checkpoints/best.pt``, else ``last.pt``."""
    from cyclegan.training.checkpoint import final_checkpoint

    found = final_checkpoint(cfg.train.out_dir)
    if found is not None:
        return found
    ckpt = Path(cfg.train.out_dir) / "checkpoints"
    raise EvalError(
        f"no checkpoint to evaluate: neither {ckpt / 'best.pt'} nor {ckpt / 'last.pt'} exists. "
        "Run `cyclegan train` first or pass --model (a .pt checkpoint or an ONNX folder)"
    )


def _describe(cfg: Config) -> str:
    a, b = cfg.model.input_nc, cfg.model.output_nc
    return "RGB" if a == b == 3 else f"A {describe(a)} / B {describe(b)}"


def pick_device(cfg: Config) -> torch.device:
    if cfg.train.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.train.device)


def load_translators(model: Path, device: torch.device) -> tuple[Generator, Generator, str]:
    """(G_AB, G_BA, kind) from a checkpoint ``.pt`` or an ONNX export folder."""
    if model.is_file() and model.suffix == ".pt":
        from cyclegan.training.checkpoint import load_generators

        _, g_ab, g_ba = load_generators(model, device)
        return g_ab, g_ba, "checkpoint"
    if model.is_dir():
        from cyclegan.models.onnx_generator import OnnxGenerator, OnnxModelError

        try:
            g_ab, g_ba = (OnnxGenerator(model / f"generator_{d}.onnx") for d in DIRECTIONS)
        except OnnxModelError as e:
            raise EvalError(str(e)) from e
        return _torch_out(g_ab), _torch_out(g_ba), "onnx"
    raise EvalError(
        f"--model {model}: expected a checkpoint .pt file or an ONNX folder with "
        "generator_AtoB.onnx and generator_BtoA.onnx"
    )


def _torch_out(gen: Any) -> Generator:
    return lambda x: torch.from_numpy(gen(x))


@dataclass
class _Data:
    test: dict[str, ImageSet]
    gt: dict[str, ImageSet | None]
    size: int


def load_data(cfg: Config, root: Path) -> _Data:
    """Test splits (and ground truth when present) at ``transforms.crop_size``."""
    for split in ("testA", "testB"):
        if not (root / split).is_dir():
            raise EvalError(
                f"{root / split} not found: --data must be a dataset root with testA/ and testB/ "
                f"(default data.processed_dir={cfg.data.processed_dir}; run `dvc repro preprocess`)"
            )
    size, nc = cfg.transforms.crop_size, domain_channels(cfg.model)
    test = {d: load_folder(root / f"test{d}", size, cfg.evaluate.max_images, nc[d]) for d in "AB"}
    other = {"A": "B", "B": "A"}  # testA_gt is testA rendered in domain B
    gt = {d: load_ground_truth(root, f"test{d}", test[d], size, nc[other[d]]) for d in "AB"}
    return _Data(test, gt, size)


def load_train(cfg: Config, root: Path, size: int) -> dict[str, Tensor] | None:
    """Training splits at eval size (classifier + mean-image baseline); None if absent."""
    if not all((root / f"train{d}").is_dir() for d in "AB"):
        if cfg.evaluate.classifier_steps > 0:
            raise EvalError(
                f"{root} has no trainA/ and trainB/: the domain classifier trains on them "
                "(or set evaluate.classifier_steps=0 to skip domain accuracy)"
            )
        return None
    nc = domain_channels(cfg.model)
    return {d: load_folder(root / f"train{d}", size, TRAIN_MAX_IMAGES, nc[d]).images for d in "AB"}


def fit_classifier(
    cfg: Config, train: dict[str, Tensor] | None, notes: list[str] | None = None
) -> TrainedClassifier | None:
    """The domain classifier (any channel count, but the same in both domains)."""
    if cfg.evaluate.classifier_steps == 0 or train is None:
        return None
    if train["A"].shape[1] != train["B"].shape[1]:
        _note(
            notes if notes is not None else [],
            f"domain accuracy skipped: domain A has {train['A'].shape[1]} channels and B "
            f"{train['B'].shape[1]}, so a classifier would tell them apart by channel count alone",
        )
        return None
    return train_classifier(
        train["A"], train["B"], steps=cfg.evaluate.classifier_steps, seed=cfg.evaluate.seed
    )


def classifier_metrics(cfg: Config, clf: TrainedClassifier, data: _Data) -> dict[str, Any]:
    """The classifier's own accuracy on the real test images: how far to trust domain_acc."""
    e = cfg.evaluate
    hits = {d: clf.assigned(data.test[d].images, d).numpy() for d in "AB"}
    out: dict[str, Any] = {
        f"test_acc_{d}": bootstrap_ci(hits[d], e.bootstrap, e.ci, e.seed, f"test_acc_{d}").to_dict()
        for d in "AB"
    }
    both = np.concatenate([hits["A"], hits["B"]])
    out["test_acc"] = bootstrap_ci(both, e.bootstrap, e.ci, e.seed, "test_acc").to_dict()
    out["train_acc"] = clf.train_acc
    return out


def optional(cfg: Config, what: str, build: Any, notes: list[str]) -> Any:
    """Build a weight-based scorer; a ``WeightsError`` skips it (or fails when required)."""
    try:
        return build()
    except WeightsError as e:
        if cfg.evaluate.require_weights:
            raise
        _note(notes, f"{what} skipped (evaluate.require_weights=false): {e}")
        return None


def translate_both(
    cfg: Config, data: _Data, g_ab: Generator, g_ba: Generator, device: torch.device
) -> dict[str, Direction]:
    """A->B on testA and B->A on testB (with reconstructions and ground truth when present)."""
    gens = {"A": g_ab, "B": g_ba}
    out = {}
    for name, (src, dst) in DIRECTIONS.items():
        gt = data.gt[src]
        out[name] = run_direction(
            name,
            data.test[src].images,
            data.test[src].names,
            gens[src],
            gens[dst],
            None if gt is None else gt.images,
            cfg.evaluate.batch_size,
            device,
        )
    return out


def score_directions(
    cfg: Config,
    data: _Data,
    g_ab: Generator,
    g_ba: Generator,
    device: torch.device,
    clf: TrainedClassifier | None,
    lpips: LpipsScorer | None,
    target_means: dict[str, Tensor],
) -> tuple[list[Direction], dict[str, dict[str, np.ndarray]]]:
    """Translate both test sets and compute every per-image metric."""
    dirs, per_image = [], {}
    for name, d in translate_both(cfg, data, g_ab, g_ba, device).items():
        d.target_mean = target_means.get(d.target)
        values = weight_free(d, clf)
        if lpips is not None:
            values.update(lpips_metrics(d, lpips, cfg.evaluate.batch_size))
        dirs.append(d)
        per_image[name] = values
    return dirs, per_image


def set_metrics(
    cfg: Config, ex: fidmod.InceptionExtractor, dirs: list[Direction], notes: list[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """FID/KID of translations vs the real target set, and of the untranslated inputs."""
    bs, sub, seed = cfg.evaluate.batch_size, cfg.evaluate.kid_subset_size, cfg.evaluate.seed
    rgb = {d.name: (as_rgb(d.inputs), as_rgb(d.fake)) for d in dirs}
    if any(x is None for pair in rgb.values() for x in pair):
        counts = sorted({d.inputs.shape[1] for d in dirs})
        _note(
            notes,
            f"FID/KID skipped: the Inception network takes RGB; these domains have {counts} "
            "channels (1-channel images are repeated to RGB, other counts cannot be scored)",
        )
        return {}, {}
    real = {
        d.name[0]: ex.features(to_uint8(rgb[d.name][0]), bs, f"inception real {d.name[0]}")
        for d in dirs
    }
    out, proto = {}, {}
    base = fidmod.fid_kid(real["B"], real["A"], sub, seed)  # identity: testA vs testB (symmetric)
    for d in dirs:
        fake = ex.features(to_uint8(rgb[d.name][1]), bs, f"inception {d.name}")
        scores = fidmod.fid_kid(real[d.target], fake, sub, seed)
        ident = (
            base
            if d.target == "B"
            else {**base, "n_real": base["n_fake"], "n_fake": base["n_real"]}
        )
        out[d.name] = {
            f"{p}{k}": v
            for p, s in (("", scores), ("identity_", ident))
            for k, v in _fid_json(s).items()
        }
        proto[d.name] = fidmod.protocol(ex.weights, scores)
        warn = fidmod.small_set_warning(f"{d.name} FID", scores["n_real"], scores["n_fake"])
        if warn:
            _note(notes, warn)
    return out, proto


def _fid_json(s: dict[str, Any]) -> dict[str, dict[str, float | int]]:
    counts = {"n_real": s["n_real"], "n_fake": s["n_fake"]}
    return {
        "fid": {"value": s["fid"], **counts},
        "kid": {
            "mean": s["kid_mean"],
            "std": s["kid_std"],
            "subset_size": s["kid_subset_size"],
            **counts,
        },
    }


def checkpoint_curve(
    cfg: Config, model: Path, data: _Data, clf: TrainedClassifier | None, device: torch.device
) -> list[dict[str, Any]]:
    """Weight-free means for every ``step_N.pt`` beside the evaluated checkpoint."""
    if not cfg.evaluate.curve or model.suffix != ".pt":
        return []
    from cyclegan.training.checkpoint import load_generators, step_checkpoints

    rows = []
    for step, path in sorted(step_checkpoints(model.parent)):
        _, g_ab, g_ba = load_generators(path, device)
        row: dict[str, Any] = {"step": step}
        for name, d in translate_both(cfg, data, g_ab, g_ba, device).items():
            row.update({f"{k}_{name}": v for k, v in means(weight_free(d, clf, False)).items()})
        for key in CURVE_KEYS:
            if f"{key}_AtoB" in row:
                row[key] = (row[f"{key}_AtoB"] + row[f"{key}_BtoA"]) / 2
        rows.append(row)
    return rows


def assemble_metrics(
    cfg: Config,
    data: _Data,
    per_image: dict[str, dict[str, np.ndarray]],
    sets: dict[str, dict[str, Any]],
    clf_metrics: dict[str, Any],
) -> dict[str, Any]:
    """eval.json: numbers only, every score with its sample count."""
    e = cfg.evaluate
    out: dict[str, Any] = {}
    for name, values in per_image.items():
        est = estimates(values, e.bootstrap, e.ci, e.seed)
        out[name] = {**report.estimates_to_dict(est), **sets.get(name, {})}
    if clf_metrics:
        out["classifier"] = clf_metrics
    out["n_images"] = {f"test{d}": len(data.test[d]) for d in "AB"}
    out["fid_available"] = int(bool(sets))
    out["lpips_available"] = int(any("lpips_content" in v for v in per_image.values()))
    return out


def build_protocol(
    cfg: Config,
    header: dict[str, str],
    clf: TrainedClassifier | None,
    lpips: LpipsScorer | None,
    fid_proto: dict[str, Any],
    data: _Data,
    notes: list[str],
) -> dict[str, Any]:
    from cyclegan import tracking

    e = cfg.evaluate
    skipped = {str(s.folder): s.skipped for s in data.test.values() if s.skipped}
    return {
        **header,
        "versions": tracking.library_versions(),
        "weight_free": {
            "input": f"{_describe(cfg)} resized to {data.size}x{data.size} (bicubic), "
            "mapped to [0, 1]",
            "l1": "mean absolute error on [0, 1]",
            "psnr": "data_range=1, capped at 100 dB",
            "ssim": "torchmetrics gaussian window 11, sigma 1.5, data_range=1",
            "mean_target_baseline": f"per-pixel mean of up to {TRAIN_MAX_IMAGES} target-domain "
            "training images at the same size",
            "n": {name: len(data.test[name[0]]) for name in DIRECTIONS},
        },
        "bootstrap": {
            "method": "percentile",
            "resamples": e.bootstrap,
            "ci": e.ci,
            "seed": e.seed,
            "gains": "paired (same images), positive = beats identity",
        },
        "classifier": clf.protocol() if clf else "disabled (evaluate.classifier_steps=0)",
        "lpips": lpips.protocol() if lpips else "skipped or disabled (see notes)",
        "fid_kid": fid_proto or "skipped or disabled (see notes)",
        "unreadable_test_files": skipped,
        "notes": notes,
    }


def write_outputs(
    cfg: Config,
    metrics: dict[str, Any],
    protocol: dict[str, Any],
    dirs: list[Direction],
    per_image: dict[str, dict[str, np.ndarray]],
    curve: list[dict[str, Any]],
    notes: list[str],
    header: dict[str, str],
) -> dict[str, Path]:
    out, rep = Path(cfg.evaluate.out_dir), Path(cfg.evaluate.report_dir)
    rows = [r for d in dirs for r in report.per_image_rows(d.name, d.names, per_image[d.name])]
    cols = ["step", *CURVE_KEYS, *(f"{k}_{n}" for k in CURVE_KEYS for n in DIRECTIONS)]
    paths = {
        "metrics": report.write_json(out / "eval.json", metrics),
        "protocol": report.write_json(out / "eval_protocol.json", protocol),
        "per_image": report.write_csv(out / "eval_per_image.csv", rows),
        "curve": report.write_csv(out / "eval_curve.csv", curve, cols),
    }
    if cfg.evaluate.report_images > 0:
        paths["png"] = report.grid_png(dirs, cfg.evaluate.report_images, rep / "eval_samples.png")
    paths["html"] = report.report_html(
        metrics, protocol, paths.get("png"), rep / "eval_report.html", notes, header, curve
    )
    return paths


def _train_run_id(cfg: Config, model: Path) -> str | None:
    """The training run's id when the evaluated checkpoint belongs to ``train.out_dir``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from cyclegan import tracking

    run_dir = Path(cfg.train.out_dir).resolve()
    id_file = run_dir / tracking.RUN_ID_FILE
    if not id_file.is_file() or not model.resolve().is_relative_to(run_dir):
        return None
    run_id = id_file.read_text().strip()
    tracking.setup(cfg.tracking)
    try:
        mlflow.get_run(run_id)
    except MlflowException:
        return None
    return run_id


def log_to_mlflow(
    cfg: Config,
    model: Path,
    metrics: dict[str, Any],
    curve: list[dict[str, Any]],
    paths: dict[str, Path],
    header: dict[str, str],
) -> str | None:
    """Metrics (``eval.*``), the checkpoint curve, tags and every output file as artefacts."""
    if not cfg.tracking.enabled:
        return None
    import mlflow

    from cyclegan import tracking
    from cyclegan.config import flatten

    numbers = {
        f"eval.{k}": float(v)
        for k, v in flatten(metrics).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    with tracking.mlflow_run(cfg.tracking, "evaluate", _train_run_id(cfg, model)) as run:
        mlflow.log_metrics(numbers)
        for row in curve:
            step = int(row["step"])
            mlflow.log_metrics(
                {f"eval_curve.{k}": float(v) for k, v in row.items() if k != "step"}, step=step
            )
        mlflow.set_tags({f"eval.{k}": str(v)[:500] for k, v in header.items()})
        for key, path in paths.items():
            mlflow.log_artifact(str(path), "eval/report" if key in ("png", "html") else "eval")
        return run.info.run_id


def evaluate(
    cfg: Config, model: str | Path | None = None, data: str | Path | None = None
) -> EvalResult:
    """Score ``model`` (default best.pt, else last.pt) on ``data`` (default processed_dir)."""
    before = torch.get_num_threads()
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    try:
        return _evaluate(cfg, model, data)
    finally:
        torch.set_num_threads(before)


def _evaluate(cfg: Config, model: str | Path | None, data: str | Path | None) -> EvalResult:
    from datetime import UTC, datetime

    from cyclegan import tracking

    if cfg.tracking.enabled:
        tracking.preflight(cfg.tracking)
    model_path = Path(model) if model else default_model(cfg)
    if not model_path.exists():
        raise EvalError(f"--model {model_path}: not found (a .pt checkpoint or an ONNX folder)")
    root = Path(data) if data else Path(cfg.data.processed_dir)
    device, notes, e = pick_device(cfg), [], cfg.evaluate
    dataset = load_data(cfg, root)  # the user's inputs first, before weights (maybe downloads)
    g_ab, g_ba, kind = load_translators(model_path, device)
    lpips = (
        optional(
            cfg,
            "LPIPS",
            lambda: load_lpips(
                e.lpips_net, device, e.lpips_backbone_weights, e.lpips_weights, e.download
            ),
            notes,
        )
        if e.lpips
        else None
    )
    inception = (
        optional(
            cfg,
            "FID/KID",
            lambda: fidmod.load_inception(None, device, e.inception_weights, e.download),
            notes,
        )
        if e.fid
        else None
    )
    train = load_train(cfg, root, dataset.size)
    clf = fit_classifier(cfg, train, notes)
    if lpips is not None and not {cfg.model.input_nc, cfg.model.output_nc} <= {1, 3}:
        _note(
            notes,
            "LPIPS skipped: its network takes RGB (grey is repeated to RGB); these "
            f"domains have {cfg.model.input_nc} and {cfg.model.output_nc} channels",
        )
    means_img = {d: t.mean(0, keepdim=True) for d, t in train.items()} if train else {}
    dirs, per_image = score_directions(cfg, dataset, g_ab, g_ba, device, clf, lpips, means_img)
    sets, fid_proto = set_metrics(cfg, inception, dirs, notes) if inception else ({}, {})
    curve = checkpoint_curve(cfg, model_path, dataset, clf, device)
    clf_metrics = classifier_metrics(cfg, clf, dataset) if clf else {}
    metrics = assemble_metrics(cfg, dataset, per_image, sets, clf_metrics)
    header = {
        "model": str(model_path),
        "model_kind": kind,
        "data": str(root),
        "image_size": str(dataset.size),
        "device": str(device),
        "git_commit": tracking.git_commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    protocol = build_protocol(cfg, header, clf, lpips, fid_proto, dataset, notes)
    paths = write_outputs(cfg, metrics, protocol, dirs, per_image, curve, notes, header)
    run_id = log_to_mlflow(cfg, model_path, metrics, curve, paths, header)
    return EvalResult(metrics, protocol, paths, notes, str(model_path), str(root), run_id)
