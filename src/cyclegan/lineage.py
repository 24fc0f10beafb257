"""Lineage of a registered version: what made it, from the registry back to the dataset.

``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> the version and its aliases -> the
training and evaluation runs -> their params -> the git commit -> the data hash -> the
DVC-tracked dataset (the ``dvc.lock`` entry with that hash, with the stage that made it and its
inputs). Everything is read from the registry's version tags (written by ``register``) and the
runs they name; ``dvc.lock`` is read from the working directory when it is there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cyclegan import tracking
from cyclegan.config import Config
from cyclegan.promote import PromotionError, get_model, read_log, version_or_none

URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")
KEY_PARAMS = ("model.generator", "model.ngf", "train.steps", "train.batch_size", "seed")


class LineageError(PromotionError):
    """The URI is malformed or names nothing in the registry."""


@dataclass(frozen=True)
class LineageResult:
    uri: str
    tree: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, **self.tree}

    def summary(self) -> str:
        return "\n".join(_render(self.uri, self.tree))


def parse_uri(uri: str) -> tuple[str, str | None, str | None]:
    m = URI.match(uri)
    if m is None:
        raise LineageError(
            f"{uri!r} is not a model URI: use models:/NAME@ALIAS or models:/NAME/VERSION "
            "(e.g. models:/cyclegan@champion)"
        )
    return m["name"], m["alias"], m["version"]


def _run(client: Any, run_id: str | None) -> dict[str, Any] | None:
    from mlflow.exceptions import MlflowException

    if not run_id or run_id == "none":
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return {"id": run_id, "status": "not found (deleted?)"}
    return {
        "id": run_id,
        "name": run.info.run_name,
        "status": run.info.status,
        "experiment_id": run.info.experiment_id,
        "params": dict(run.data.params),
        "metrics": {k: v for k, v in run.data.metrics.items() if k.startswith("eval.")},
    }


def dvc_dataset(data_path: str, data_hash: str, lock: Path = Path("dvc.lock")) -> dict[str, Any]:
    """The dvc.lock entry that produced ``data_path``, and whether its md5 is ``data_hash``."""
    import yaml

    if not lock.is_file():
        return {"path": data_path, "dvc_lock": f"{lock} not found in {Path.cwd()}"}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage, body in stages.items():
        for out in body.get("outs", []):
            if str(out.get("path", "")).rstrip("/") == data_path.rstrip("/"):
                return {
                    "path": data_path,
                    "stage": stage,
                    "md5": out.get("md5"),
                    "files": out.get("nfiles"),
                    "matches_version": out.get("md5") == data_hash,
                    "inputs": [
                        {"path": d.get("path"), "md5": d.get("md5")}
                        for d in body.get("deps", [])
                        if not str(d.get("path", "")).startswith("src/")
                    ],
                    "raw_source": _raw_source(stages),
                }
    return {"path": data_path, "dvc_lock": f"{lock} has no output {data_path}"}


def _raw_source(stages: dict[str, Any]) -> Any:
    params = stages.get("data", {}).get("params", {})
    for values in params.values():
        if isinstance(values, dict) and "data.source" in values:
            return values["data.source"]
    return None


def lineage(cfg: Config, uri: str) -> LineageResult:
    """The chain for ``uri``; ``LineageError`` for a bad URI, model, alias or version."""
    import mlflow

    name, alias, version = parse_uri(uri)
    tracking.setup(cfg.tracking)
    client = mlflow.MlflowClient()
    model = get_model(client, name)
    if alias is not None:
        version = model.aliases.get(alias)
        if version is None:
            raise LineageError(
                f"model {name!r} has no @{alias} (aliases: "
                f"{', '.join(f'@{a}' for a in sorted(model.aliases)) or 'none'})"
            )
    mv = version_or_none(client, name, version)
    if mv is None:
        raise LineageError(f"model {name!r} has no version {version} (deleted?)")
    tags = dict(mv.tags)
    train = _run(client, tags.get("training_run_id"))
    params = train["params"] if train and "params" in train else {}
    history = [e for e in read_log(model) if e.get("candidate") == str(mv.version)]
    tree = {
        "model": name,
        "version": str(mv.version),
        "aliases": sorted(mv.aliases),
        "created": mv.creation_timestamp,
        "source": mv.source,
        "checkpoint": {"path": tags.get("checkpoint"), "sha256": tags.get("checkpoint_sha256")},
        "training_run": train,
        "evaluation_run": _run(client, tags.get("evaluation_run_id")),
        "params_hash": tags.get("params_hash"),
        "git_commit": tags.get("git_commit"),
        "data_hash": tags.get("data_hash"),
        "data_hash_source": tags.get("data_hash_source"),
        "dataset": dvc_dataset(
            tags.get("data_path", cfg.data.processed_dir), tags.get("data_hash", "")
        ),
        "metrics": {k[len("metric.") :]: v for k, v in tags.items() if k.startswith("metric.")},
        "onnx_parity_max_abs": tags.get("onnx_parity_max_abs"),
        "promotions": history,
        "key_params": {k: params[k] for k in KEY_PARAMS if k in params},
    }
    return LineageResult(uri, tree)


def _metric_texts(m: dict[str, str]) -> list[str]:
    out = []
    for k in m:
        if k.endswith((".ci_low", ".ci_high", ".protocol")):
            continue
        ci = f" [{float(m[k + '.ci_low']):.4g}, {float(m[k + '.ci_high']):.4g}]"
        out.append(f"{k}={float(m[k]):.4g}" + (ci if k + ".ci_low" in m else ""))
    return out


def _render(uri: str, t: dict[str, Any]) -> list[str]:
    aliases = " ".join(f"@{a}" for a in t["aliases"]) or "no alias"
    lines = [f"{uri} -> {t['model']} version {t['version']} ({aliases})"]
    ck = t["checkpoint"]
    lines.append(f"├─ checkpoint {ck['path']} sha256 {str(ck['sha256'])[:16]}")
    lines.append(f"├─ model source {t['source']}")
    for label, run in (
        ("training run", t["training_run"]),
        ("evaluation run", t["evaluation_run"]),
    ):
        if run is None:
            lines.append(f"├─ {label}: none recorded")
            continue
        lines.append(f"├─ {label} {run['id']} ({run.get('name')}, {run['status']})")
    lines.append(
        f"│  └─ params hash {t['params_hash']}: "
        + ", ".join(f"{k}={v}" for k, v in t["key_params"].items())
    )
    lines.append(f"│     └─ git commit {t['git_commit']}")
    lines.append(f"│        └─ data hash {t['data_hash']} (from {t['data_hash_source']})")
    ds = t["dataset"]
    if "stage" in ds:
        match = "matches" if ds["matches_version"] else "DIFFERS from the version's hash"
        lines.append(
            f"│           └─ DVC dataset {ds['path']} (stage '{ds['stage']}', md5 {ds['md5']}, "
            f"{ds['files']} files; {match})"
        )
        for inp in ds["inputs"]:
            lines.append(f"│              └─ input {inp['path']} md5 {inp['md5']}")
        if ds.get("raw_source"):
            lines.append(f"│                 └─ data.source = {ds['raw_source']}")
    else:
        lines.append(f"│           └─ DVC dataset {ds['path']}: {ds['dvc_lock']}")
    lines.append("├─ metrics: " + (", ".join(_metric_texts(t["metrics"])) or "none"))
    lines.append(f"├─ ONNX parity max abs error {t['onnx_parity_max_abs']}")
    decisions = [
        f"#{e.get('seq')} {e.get('action')} "
        f"{'accepted' if e.get('accepted') else 'refused'} {e.get('at')}"
        for e in t["promotions"]
    ]
    lines.append("└─ promotions: " + ("; ".join(decisions) or "none"))
    return lines
