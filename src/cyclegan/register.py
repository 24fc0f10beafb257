"""Register step: the exported model becomes a version of ``tracking.registered_model``.

A registry version must carry its evidence, so that anyone can tell what made it and whether it
is better than the live one: the git commit, the DVC data hash, the params hash, every gate
metric of ``promote.gates`` (mean, confidence interval, protocol), the ONNX parity error and the
training and evaluation run ids, all as version tags. The model is the pyfunc of
``serving.log_onnx_model`` (models-from-code) with both ONNX files and the PyTorch checkpoint
as artefacts. Registering is idempotent: the checkpoint's SHA-256 is a version tag, and the same
checkpoint again returns the existing version. A new version gets the alias ``@challenger``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cyclegan import tracking
from cyclegan.config import Config, config_from_dict

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHECKPOINT_TAG = "checkpoint_sha256"


class RegisterError(RuntimeError):
    """The candidate cannot be registered (missing files, no registry); nothing was created."""


@dataclass(frozen=True)
class RegisterResult:
    name: str
    version: str
    created: bool  # False: this checkpoint was already registered as ``version``
    model_uri: str  # models:/NAME/VERSION
    aliases: list[str] = field(default_factory=list)
    run_id: str | None = None  # the run holding the logged model
    tags: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        what = "registered new version" if self.created else "already registered as version"
        aliases = " ".join(f"@{a}" for a in self.aliases) or "no alias"
        return f"{self.name}: {what} {self.version} ({aliases}) -> {self.model_uri}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def lookup(tree: dict[str, Any], dotted: str) -> Any:
    """``lookup({"a": {"b": 1}}, "a.b") == 1``; None when a part is missing."""
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def data_hash(cfg: Config) -> tuple[str, str]:
    """(hash, source): the DVC md5 of the processed data from dvc.lock, else its manifest's."""
    md5 = tracking.dvc_data_hash(cfg.data.processed_dir)
    if md5 != "unknown":
        return md5, "dvc.lock"
    manifest = Path(cfg.data.processed_dir) / "manifest.json"
    if manifest.is_file():
        return f"sha256:{sha256_file(manifest)[:32]}", str(manifest)
    return "unknown", "none"


def metric_protocol(protocol: dict[str, Any], metric: str) -> str:
    """What a metric's number depends on: comparing two versions needs the same protocol."""
    boot = protocol.get("bootstrap", {})
    direction = metric.split(".")[0]
    n = lookup(protocol, f"weight_free.n.{direction}")
    kind = "fid_kid" if metric.split(".")[-1] in ("fid", "kid") else "weight_free"
    return (
        f"{kind}; n={n}; image_size={protocol.get('image_size')}; ci={boot.get('ci')}; "
        f"bootstrap={boot.get('resamples')} seed={boot.get('seed')}"
    )


def metric_tags(cfg: Config) -> dict[str, str]:
    """Each gate metric of ``eval.json``: ``metric.<name>`` (+ ``.ci_low/.ci_high/.protocol``)."""
    out_dir = Path(cfg.evaluate.out_dir)
    metrics = _read_json(out_dir / "eval.json")
    protocol = _read_json(out_dir / "eval_protocol.json")
    if not metrics:
        raise RegisterError(
            f"{out_dir / 'eval.json'} is missing or unreadable: a version must carry its metrics. "
            "Run `cyclegan evaluate` first"
        )
    tags: dict[str, str] = {}
    for gate in cfg.promote.gates:
        value = lookup(metrics, gate.metric)
        mean = value.get("mean", value.get("value")) if isinstance(value, dict) else value
        if not isinstance(mean, int | float):
            log.warning("gate metric %s is not in %s; promotion will refuse", gate.metric, out_dir)
            continue
        key = f"metric.{gate.metric}"
        tags[key] = repr(float(mean))
        if isinstance(value, dict) and "lo" in value and "hi" in value:
            tags[f"{key}.ci_low"], tags[f"{key}.ci_high"] = repr(value["lo"]), repr(value["hi"])
        tags[f"{key}.protocol"] = metric_protocol(protocol, gate.metric)
    tags["eval.model"] = str(protocol.get("model", "unknown"))
    return tags


def parity_error(onnx_dir: Path) -> str:
    """Worst max |ONNX Runtime - PyTorch| of the fp32 files (from the export's own report)."""
    rows = _read_json(onnx_dir / "export.json").get("parity", [])
    fp32 = [r["max_abs"] for r in rows if r.get("precision") == "fp32"]
    return repr(max(fp32)) if fp32 else "unknown"


def _training_run(cfg: Config, ckpt: Path) -> Any:
    """The MLflow run that trained ``ckpt`` (its run folder's id file), if this store has it."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    for folder in (ckpt.parent.parent, Path(cfg.train.out_dir)):
        f = folder / tracking.RUN_ID_FILE
        if f.is_file():
            try:
                return MlflowClient().get_run(f.read_text().strip())
            except MlflowException:
                return None
    return None


def _evaluation_run_id(train_run: Any, eval_model: str) -> str | None:
    """Evaluation logs into the training run when it can, else into a run tagged eval.model."""
    import mlflow

    if train_run is not None and any(k.startswith("eval.") for k in train_run.data.metrics):
        return train_run.info.run_id
    runs = mlflow.search_runs(
        filter_string=f"tags.`eval.model` = '{eval_model}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0].info.run_id if runs else None


def evidence(cfg: Config, ckpt: Path, onnx_dir: Path, sha: str, train_run: Any) -> dict[str, str]:
    """All version tags: lineage, params, metrics, parity."""
    from cyclegan.training.checkpoint import load_checkpoint

    state = load_checkpoint(ckpt)
    train_cfg = config_from_dict(state["config"])
    params = train_run.data.params if train_run is not None else {}
    md5, source = data_hash(cfg)
    tags = {
        CHECKPOINT_TAG: sha,
        "checkpoint": str(ckpt),
        "checkpoint_step": str(state.get("step", "unknown")),
        "git_commit": params.get("git_commit") or tracking.git_commit(),
        "data_hash": params.get("data_hash", "unknown") if md5 == "unknown" else md5,
        "data_hash_source": source,
        "data_path": cfg.data.processed_dir,
        "params_hash": train_cfg.hash(),
        "onnx_parity_max_abs": parity_error(onnx_dir),
        "training_run_id": train_run.info.run_id if train_run is not None else "none",
        **metric_tags(cfg),
    }
    tags["evaluation_run_id"] = _evaluation_run_id(train_run, tags["eval.model"]) or "none"
    return tags


def find_version(client: Any, name: str, sha: str) -> Any:
    """The live version of ``name`` registered from the checkpoint with this SHA-256."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    return next((v for v in versions if v.tags.get(CHECKPOINT_TAG) == sha), None)


def _result(client: Any, name: str, mv: Any, created: bool) -> RegisterResult:
    mv = client.get_model_version(name, mv.version)
    return RegisterResult(
        name=name,
        version=str(mv.version),
        created=created,
        model_uri=f"models:/{name}/{mv.version}",
        aliases=sorted(mv.aliases),
        run_id=mv.run_id,
        tags=dict(mv.tags),
    )


def register(
    cfg: Config, checkpoint: str | Path | None = None, onnx_dir: str | Path | None = None
) -> RegisterResult:
    """Register the exported model of ``checkpoint`` (default best.pt, else last.pt)."""
    import mlflow

    from cyclegan import serving
    from cyclegan.training.checkpoint import final_checkpoint

    if not cfg.tracking.enabled:
        raise RegisterError(
            "tracking.enabled is false: registering needs an MLflow registry "
            "(set tracking.enabled=true and tracking.uri)"
        )
    ckpt = Path(checkpoint) if checkpoint else final_checkpoint(cfg.train.out_dir)
    if ckpt is None or not ckpt.is_file():
        where = ckpt or Path(cfg.train.out_dir) / "checkpoints" / "best.pt"
        raise RegisterError(f"no checkpoint at {where}: train first or pass --checkpoint PATH")
    onnx = Path(onnx_dir or cfg.export.out_dir)
    files = {d: onnx / f"generator_{d}.onnx" for d in serving.DIRECTIONS}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise RegisterError(f"missing ONNX files {missing}: run `cyclegan export` first")
    tracking.setup(cfg.tracking)
    client = mlflow.MlflowClient()
    name, sha = cfg.tracking.registered_model, sha256_file(ckpt)
    found = find_version(client, name, sha)
    if found is not None:
        return _result(client, name, found, created=False)
    train_run = _training_run(cfg, ckpt)
    tags = evidence(cfg, ckpt, onnx, sha, train_run)
    run_id = train_run.info.run_id if train_run is not None else None
    with tracking.mlflow_run(cfg.tracking, run_name="register", run_id=run_id) as run:
        info = serving.log_onnx_model(files, name="registered_model", checkpoint=ckpt)
        mlflow.set_tags({"registered_model": name, CHECKPOINT_TAG: sha})
        run_id = run.info.run_id
    mv = mlflow.register_model(info.model_uri, name, tags=tags)
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return _result(client, name, mv, created=True)
