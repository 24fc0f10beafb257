"""MLflow tracking: fail fast on an unreachable server, one place that knows the run layout.

Only rank 0 calls into this module during distributed training. The default store is a local
sqlite file (``sqlite:///mlflow.db``); a cluster points ``tracking.uri`` at an MLflow server.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cyclegan.config import TrackingConfig


class TrackingError(RuntimeError):
    """The tracking store cannot be used; raised at start, before any expensive work."""


RUN_ID_FILE = "mlflow_run_id.txt"


def check_reachable(uri: str, timeout_s: float = 10.0) -> str:
    """Raise ``TrackingError`` now if an http(s) tracking server does not answer as MLflow.

    MLflow itself retries for minutes; a run that finds out after training is worthless. A URI
    that answers with some other web page (a proxy, the UI's ``/#/`` address) gets one line, not
    the page's HTML. Returns the server's MLflow version (``""`` for a local store).
    """
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return ""
    import requests

    base = uri.rstrip("/")
    try:
        r = requests.get(base + "/health", timeout=timeout_s)
    except requests.RequestException as e:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({type(e).__name__}). Start it, fix "
            "tracking.uri, or set tracking.enabled=false to train without tracking."
        ) from e
    if r.status_code >= 500:
        raise TrackingError(
            f"MLflow tracking server {uri} answered HTTP {r.status_code} on /health"
        )
    if r.status_code != 200 or r.text.strip() != "OK":
        raise TrackingError(
            f"{uri} is not an MLflow tracking server: GET /health answered HTTP "
            f"{r.status_code} with {_describe_body(r)}. Set tracking.uri to the server's base "
            "address (e.g. http://host:5000)."
        )
    try:
        return requests.get(base + "/version", timeout=timeout_s).text.strip()[:40]
    except requests.RequestException:
        return "unknown"


def _describe_body(r: Any) -> str:
    """A few words about a response body, never the body itself."""
    ctype = r.headers.get("content-type", "").split(";")[0].strip() or "no content type"
    m = re.search(r"<title[^>]*>(.*?)</title>", r.text[:20000], re.I | re.S)
    title = f" titled {' '.join(m.group(1).split())[:60]!r}" if m else ""
    kind = "an HTML page" if "html" in ctype else f"a {ctype} body"
    return f"{kind}{title} ({len(r.content)} bytes)"


def one_line(err: Exception, limit: int = 300) -> str:
    """The first line of an error, shortened: MLflow puts whole HTTP bodies in messages."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` store, else ``None``."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :]).expanduser().resolve()


def check_sqlite_parent(uri: str) -> None:
    """A sqlite store's folder must exist; it is created only inside the current directory.

    ``sqlite:////nonexistent/dir/mlflow.db`` must not create folders at the filesystem root.
    """
    db = sqlite_path(uri)
    if db is None or db.parent.is_dir():
        return
    if db.parent.is_relative_to(Path.cwd().resolve()):
        db.parent.mkdir(parents=True, exist_ok=True)
        return
    raise TrackingError(
        f"tracking.uri {uri}: folder {db.parent} does not exist. Create it, or point "
        "tracking.uri at a file in an existing folder (e.g. sqlite:///mlflow.db)."
    )


def _artifact_location(uri: str) -> str | None:
    """For a sqlite store, artefacts go beside the database (not into ./mlruns of the cwd)."""
    db = sqlite_path(uri)
    return None if db is None else (db.parent / "mlartifacts").as_uri()


def preflight(cfg: TrackingConfig) -> str:
    """Every check that needs no MLflow import: run by steps before any long work."""
    if not cfg.enabled:
        return ""
    check_sqlite_parent(cfg.uri)
    return check_reachable(cfg.uri, cfg.timeout_s)


def setup(cfg: TrackingConfig) -> None:
    """Point MLflow at ``cfg.uri`` and the experiment, checking reachability first."""
    import mlflow

    check_reachable(cfg.uri, cfg.timeout_s)
    check_sqlite_parent(cfg.uri)
    artifacts = _artifact_location(cfg.uri)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(cfg.timeout_s)))
    mlflow.set_tracking_uri(cfg.uri)
    try:
        if artifacts and mlflow.get_experiment_by_name(cfg.experiment) is None:
            mlflow.create_experiment(cfg.experiment, artifact_location=artifacts)
        mlflow.set_experiment(cfg.experiment)
    except Exception as e:  # MLflow raises many types; all mean "cannot use this store"
        raise TrackingError(f"cannot use MLflow store {cfg.uri}: {one_line(e)}") from e


@contextlib.contextmanager
def mlflow_run(
    cfg: TrackingConfig, run_name: str | None = None, run_id: str | None = None
) -> Iterator[Any]:
    """Start (or resume, with ``run_id``) an MLflow run; yields the active run or ``None``.

    Yields ``None`` when tracking is disabled so callers can write ``if run: ...``.
    """
    if not cfg.enabled:
        yield None
        return
    import mlflow

    setup(cfg)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name) as run:
        yield run


def git_commit(cwd: str | Path = ".") -> str:
    """The current git commit (with ``-dirty`` when the tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dvc_data_hash(path: str | Path) -> str:
    """The DVC md5 of a tracked output (from ``dvc.lock``), or ``unknown`` when untracked."""
    import yaml

    lock = Path("dvc.lock")
    if not lock.is_file():
        return "unknown"
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    except yaml.YAMLError:
        return "unknown"
    target = str(Path(path)).rstrip("/")
    for stage in stages.values():
        for out in stage.get("outs", []):
            if str(out.get("path", "")).rstrip("/") == target:
                return str(out.get("md5", "unknown"))
    return "unknown"


def library_versions() -> dict[str, str]:
    """Versions that change numbers: recorded with every run and every metric."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "torchmetrics", "onnx", "onnxruntime", "mlflow", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def log_dict_artifact(data: dict[str, Any], name: str) -> None:
    """Log a JSON artefact to the active run (no-op without one)."""
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.log_text(json.dumps(data, indent=2, sort_keys=True, default=str), name)
