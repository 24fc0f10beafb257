"""The doctor step: ``doctor(cfg) -> DoctorReport``, what is reachable and what is misconfigured.

Run it before a long job: one function per section (tracking, artifacts, dvc_remote, s3,
weights, device, precision), each returning a :class:`Section` with a status, what was found and,
when something is wrong, how to fix it. A section is *required* when the current params need it
(tracking enabled, an ``s3://`` data source, ``evaluate.require_weights``); a failing required
section makes the report fail (``cyclegan doctor`` exits 1), anything else is a warning.
Nothing is downloaded and nothing is left behind (the artefact probe's run is deleted).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cyclegan import tracking
from cyclegan.config import Config

OK, WARN, FAIL, SKIP = "ok", "warning", "error", "skipped"


@dataclass
class Section:
    """One row of the report; ``facts`` is what was found (never a secret)."""

    name: str
    status: str
    detail: str
    fix: str = ""
    required: bool = False
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def blocking(self) -> bool:
        return self.required and self.status == FAIL


@dataclass
class DoctorReport:
    sections: list[Section]

    @property
    def ok(self) -> bool:
        return not any(s.blocking for s in self.sections)

    def section(self, name: str) -> Section:
        return next(s for s in self.sections if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        """One object per section; its facts also at the top (``{"precision": {"auto": ...}}``)."""
        out = {}
        for s in self.sections:
            d = {k: v for k, v in asdict(s).items() if k != "name"}
            out[s.name] = {**{k: v for k, v in s.facts.items() if k not in d}, **d}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)

    def print_table(self, file: Any = None) -> None:
        from rich.console import Console
        from rich.table import Table

        colour = {OK: "green", WARN: "yellow", FAIL: "red", SKIP: "dim"}
        table = Table(title="cyclegan doctor", show_lines=True)
        for col in ("check", "status", "found", "how to fix"):
            table.add_column(col, overflow="fold")
        for s in self.sections:
            status = f"[{colour[s.status]}]{s.status}[/]" + (" (required)" if s.blocking else "")
            table.add_row(s.name, status, s.detail, s.fix)
        console = Console(file=file or sys.stdout, width=max(120, Console().width))
        console.print(table)
        failed = [s.name for s in self.sections if s.blocking]
        verdict = "missing for these params: " + ", ".join(failed) if failed else "ready"
        console.print(f"[{'red' if failed else 'green'}]{verdict}[/]", highlight=False)


# --- tracking and artefacts ---------------------------------------------------------------------


def check_tracking(cfg: Config) -> Section:
    """The tracking server (and that it is MLflow) or the local store, and its model registry."""
    t = cfg.tracking
    if not t.enabled:
        return Section("tracking", SKIP, "tracking.enabled=false", facts={"uri": t.uri})
    facts: dict[str, Any] = {"uri": t.uri}
    db = tracking.sqlite_path(t.uri)
    try:
        if db is not None and not db.exists():
            _sqlite_parent_ok(t.uri, db)
            detail = f"local store {db} is created at the first run"
            return Section("tracking", OK, detail, required=True, facts=facts)
        facts["server_version"] = tracking.check_reachable(t.uri, t.timeout_s) or None
        client = _client(t.uri, t.timeout_s)
        exp = client.get_experiment_by_name(t.experiment)
        models = client.search_registered_models(filter_string=f"name = '{t.registered_model}'")
    except Exception as e:  # TrackingError and whatever the store raises: all mean "unusable"
        return Section("tracking", FAIL, tracking.one_line(e), _tracking_fix(t.uri), True, facts)
    facts.update(experiment_exists=exp is not None, registered_model_exists=bool(models))
    where = f"MLflow {facts['server_version']} at {t.uri}" if facts["server_version"] else t.uri
    detail = f"{where}; registry answers ({t.registered_model}: " + (
        "registered)" if models else "not registered yet)"
    )
    return Section("tracking", OK, detail, required=True, facts=facts)


def _sqlite_parent_ok(uri: str, db: Path) -> None:
    """Like ``tracking.check_sqlite_parent`` but never creates anything."""
    if not db.parent.is_dir() and not db.parent.is_relative_to(Path.cwd().resolve()):
        tracking.check_sqlite_parent(uri)  # raises the standard message


def _tracking_fix(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return (
            f"start the server (mlflow server --host 0.0.0.0 --port PORT --serve-artifacts) or "
            f"fix tracking.uri ({uri}); or --set tracking.enabled=false"
        )
    return "point tracking.uri at a file in an existing folder, e.g. sqlite:///mlflow.db"


def _client(uri: str, timeout_s: float) -> Any:
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(timeout_s)))
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri, registry_uri=uri)


def check_artifacts(cfg: Config, tracking_ok: bool) -> Section:
    """Write a probe object through MLflow and read it back (the run is deleted afterwards)."""
    t = cfg.tracking
    if not t.enabled:
        return Section("artifacts", SKIP, "tracking.enabled=false")
    if not tracking_ok:
        return Section(
            "artifacts",
            FAIL,
            "not checked: the tracking store is unusable",
            "fix the tracking row first",
            True,
        )
    db = tracking.sqlite_path(t.uri)
    if db is not None and not db.exists():
        folder = db.parent / "mlartifacts"
        return Section(
            "artifacts",
            OK,
            f"local folder {folder} (created at the first run)",
            required=True,
            facts={"location": folder.as_uri()},
        )
    client = _client(t.uri, t.timeout_s)
    token = uuid.uuid4().hex
    run_id = None
    try:
        exp = client.get_experiment_by_name(t.experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(t.experiment)
        run = client.create_run(exp_id, run_name="doctor-probe", tags={"cyclegan.doctor": "1"})
        run_id, location = run.info.run_id, run.info.artifact_uri
        with tempfile.TemporaryDirectory() as tmp:
            probe = Path(tmp) / "probe.txt"
            probe.write_text(token)
            client.log_artifact(run_id, str(probe), "doctor")
            back = Path(client.download_artifacts(run_id, "doctor/probe.txt", tmp + "/back"))
            if back.read_text() != token:
                raise RuntimeError("the probe read back differs from what was written")
    except Exception as e:  # a broken store raises anything from HTTP errors to boto errors
        fix = (
            "check the artefact store: for `mlflow server --serve-artifacts`, the server's "
            "--artifacts-destination, its S3 credentials and MLFLOW_S3_ENDPOINT_URL"
        )
        return Section(
            "artifacts", FAIL, f"probe write/read failed: {tracking.one_line(e)}", fix, True
        )
    finally:
        if run_id is not None:
            _delete_probe(client, run_id)
    return Section(
        "artifacts",
        OK,
        f"wrote and read back a probe object at {location}",
        required=True,
        facts={"location": location},
    )


def _delete_probe(client: Any, run_id: str) -> None:
    from contextlib import suppress

    with suppress(Exception):  # best effort: a leftover probe run is harmless
        client._tracking_client._get_artifact_repo(run_id).delete_artifacts("doctor")
    with suppress(Exception):
        client.delete_run(run_id)


# --- DVC and S3 ----------------------------------------------------------------------------------


def check_dvc_remote(cfg: Config) -> Section:
    """The default DVC remote: configured, and reachable through DVC's own filesystem layer."""
    try:
        from dvc.exceptions import NotDvcRepoError
        from dvc.repo import Repo
    except ImportError as e:
        return Section("dvc_remote", WARN, f"dvc not importable: {e}", "install the project")
    name, url, remotes = None, "?", {}
    try:
        with Repo() as repo:
            remotes = {k: v.get("url", "?") for k, v in repo.config["remote"].items()}
            name = repo.config["core"].get("remote")
            if not name:
                return Section(
                    "dvc_remote",
                    WARN,
                    f"no default remote (remotes: {remotes})",
                    "dvc remote default NAME",
                    facts={"remotes": remotes},
                )
            url = remotes.get(name, "?")
            remote = repo.cloud.get_remote(name)
            found = remote.fs.exists(remote.path)
            root = remote.path.split("/", 1)[0]
            if not found and remote.fs.protocol == "s3" and not remote.fs.exists(root):
                raise FileNotFoundError(f"S3 bucket {root!r} does not exist")
    except NotDvcRepoError:
        return Section(
            "dvc_remote", SKIP, f"{Path.cwd()} is not a DVC project", "run inside the project"
        )
    except Exception as e:  # DVC and s3fs raise many types; all mean "cannot use the remote"
        return Section(
            "dvc_remote",
            WARN,
            f"remote '{name}' ({url}) unreachable: {tracking.one_line(e)}",
            _remote_fix(url),
            facts={"remotes": remotes},
        )
    state = "reachable" if found else "reachable, nothing pushed yet"
    detail = f"default remote '{name}' ({url}) {state}"
    return Section("dvc_remote", OK, detail, facts={"default": name, "remotes": remotes})


def _remote_fix(url: str) -> str:
    if url.startswith("s3://"):
        return "see the s3 row: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, bucket"
    return "create the folder or fix the url: dvc remote modify NAME url PATH"


def s3_uris(cfg: Config) -> list[tuple[str, str, bool]]:
    """(params key, s3 URI, required) for every S3 location the params use."""
    e = cfg.evaluate
    out = [("data.source", cfg.data.source, cfg.data.source != "synth")]
    for key in ("inception_weights", "lpips_backbone_weights", "lpips_weights"):
        out.append((f"evaluate.{key}", getattr(e, key), e.require_weights))
    return [(k, v, req) for k, v, req in out if str(v).startswith("s3://")]


def check_s3(cfg: Config) -> Section:
    """Endpoint and credentials from the standard environment; each ``s3://`` in params probed."""
    from cyclegan import storage

    facts = storage.s3_settings()
    uris = s3_uris(cfg)
    required = any(req for _, _, req in uris)
    if not uris and not (facts["endpoint"] or facts["credentials"]):
        return Section("s3", SKIP, "no s3:// in params and no S3 settings", facts=facts)
    problems, seen = [], []
    for key, uri, _ in uris:
        try:
            storage.check_s3_access(uri)
            seen.append(f"{key}={uri}")
        except storage.StorageError as err:
            problems.append(f"{key}: {err}")
    if not uris:
        try:
            storage.check_s3_endpoint()
        except storage.StorageError as err:
            problems.append(str(err))
    where = f"endpoint {facts['endpoint'] or 'AWS default'}, credentials: {facts['credentials']}"
    if problems:
        fix = (
            "set AWS_ENDPOINT_URL (MinIO, moto...), AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
            "AWS_PROFILE, and create the bucket"
        )
        return Section("s3", FAIL if required else WARN, "; ".join(problems), fix, required, facts)
    detail = f"{where}; reachable: {', '.join(seen) or 'endpoint'}"
    return Section("s3", OK, detail, required=required, facts=facts)


# --- weights, device, precision ------------------------------------------------------------------


def check_weights(cfg: Config) -> Section:
    """FID/KID and LPIPS weight files resolved as ``evaluate`` would, without downloading."""
    from cyclegan.evaluation import weights as w

    e = cfg.evaluate
    specs = ([(w.INCEPTION, e.inception_weights)] if e.fid else []) + (
        [(w.lpips_backbone_spec(e.lpips_net), e.lpips_backbone_weights)] if e.lpips else []
    )
    if not specs:
        return Section("weights", SKIP, "evaluate.fid and evaluate.lpips are off")
    found, missing, facts = [], [], {}
    for spec, explicit in specs:
        try:
            where = _locate_weights(w, spec, explicit)
            found.append(f"{spec.filename} ({where})")
            facts[spec.filename] = where
        except (w.WeightsError, OSError):
            missing.append(spec)
            facts[spec.filename] = None
    if not missing:
        return Section("weights", OK, "; ".join(found), required=e.require_weights, facts=facts)
    names = ", ".join(s.filename for s in missing)
    cache = w.hub_cache_path("x").parent
    fix = (
        f"set {' / '.join(s.param for s in missing)} to a local path or s3:// URI, or copy the "
        f"file(s) into {cache}"
    )
    status = FAIL if e.require_weights else WARN
    skipped = "" if e.require_weights else " (FID/KID/LPIPS will be skipped)"
    return Section("weights", status, f"missing: {names}{skipped}", fix, e.require_weights, facts)


def _locate_weights(w: Any, spec: Any, explicit: str) -> str:
    explicit = explicit.strip()
    if explicit.startswith("s3://"):
        from cyclegan import storage

        uri = explicit + spec.filename if explicit.endswith("/") else explicit
        cached = w.hub_cache_path(uri.rsplit("/", 1)[-1])
        if cached.is_file():
            return f"hub cache {cached}"
        try:
            storage.check_s3_access(uri, key_must_exist=True)
        except storage.StorageError as err:
            raise w.WeightsError(str(err)) from err
        return f"{uri}, fetched at the first evaluate"
    r = w.resolve_weights(spec, explicit, download=False)
    return f"{r.source} {r.path}" + ("" if r.official else ", not the official file")


def check_device(cfg: Config) -> Section:
    """Where training runs: GPU name, or the CPU model (speeds differ between CPU families)."""
    import torch

    from cyclegan.training.distributed import pick_device
    from cyclegan.training.precision import cpu_model

    try:
        device = pick_device(cfg.train.device)
    except RuntimeError as e:
        return Section("device", FAIL, str(e), "--set train.device=auto", True)
    facts: dict[str, Any] = {"device": str(device), "cpu": cpu_model(), "cores": os.cpu_count()}
    facts["torch_threads"] = torch.get_num_threads()
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
        detail = f"{device}: {facts['gpu']} ({torch.cuda.device_count()} visible)"
    else:
        detail = (
            f"cpu: {facts['cpu']}, {facts['cores']} cores, torch threads {facts['torch_threads']}"
        )
    return Section("device", OK, detail, required=True, facts=facts)


def check_precision(cfg: Config) -> Section:
    """What ``train.amp: auto`` resolves to here, by the measured probe (cached per machine)."""
    from cyclegan.training.distributed import pick_device
    from cyclegan.training.precision import precision_report

    try:
        device = pick_device(cfg.train.device)
    except RuntimeError as e:
        return Section("precision", SKIP, f"no device: {e}")
    report = precision_report(cfg, device)
    name = {"none": "fp32"}.get(report["auto"], report["auto"])
    chosen = name if cfg.train.amp == "auto" else cfg.train.amp
    facts = {**report, "amp": cfg.train.amp, "resolved": chosen}
    how = "measured" + (" (cached)" if report.get("cached") else "")
    return Section(
        "precision",
        OK,
        f"train.amp={cfg.train.amp} -> {chosen} on {device}; auto = {name} ({how})",
        facts=facts,
    )


def doctor(cfg: Config) -> DoctorReport:
    """Every check, in the order a run needs them."""
    t = check_tracking(cfg)
    checks: list[Callable[[Config], Section]] = [
        check_dvc_remote,
        check_s3,
        check_weights,
        check_device,
        check_precision,
    ]
    return DoctorReport([t, check_artifacts(cfg, t.status == OK), *(c(cfg) for c in checks)])
