"""MLflow logging that survives the tracking server going away in the middle of a run.

An hour of training must not die because the server restarted. Every record goes to the server
first; when that fails, it is appended to ``RUN_DIR/mlflow_buffer.jsonl`` (one JSON object a
line, in order) and one warning is logged. While offline, the server is probed with a cheap
``GET /health`` at most every ``retry_s`` seconds; once it answers, the buffer is replayed in
order and removed. ``finish`` ends the run (FINISHED) after a last flush, waiting up to
``tracking.flush_wait_s``; if the server is still away, everything stays in the buffer and
``cyclegan tracking sync RUN_DIR`` uploads it later.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cyclegan import tracking
from cyclegan.config import TrackingConfig
from cyclegan.storage import atomic_write_bytes

log = logging.getLogger("cyclegan.tracking")

BUFFER_FILE = "mlflow_buffer.jsonl"


def _now_ms() -> int:
    return int(time.time() * 1000)


def sync_command(run_dir: Path) -> str:
    return f"cyclegan tracking sync {run_dir}"


class RunLogger:
    """Log to one MLflow run by id; buffer locally whenever the server does not answer."""

    def __init__(self, uri: str, run_id: str, run_dir: Path, retry_s: float = 5.0) -> None:
        from mlflow.tracking import MlflowClient

        self.uri, self.run_id, self.run_dir = uri, run_id, Path(run_dir)
        self.client = MlflowClient(uri)
        self.buffer = self.run_dir / BUFFER_FILE
        self.retry_s = retry_s
        self.offline = self.buffer.exists()  # older records must reach the server first
        self._next_probe = 0.0

    # --- what callers log ------------------------------------------------------------------
    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        self._record({"op": "metrics", "values": values, "step": step})

    def params(self, values: dict[str, Any]) -> None:
        self._record({"op": "params", "values": {k: str(v)[:500] for k, v in values.items()}})

    def tags(self, values: dict[str, Any]) -> None:
        self._record({"op": "tags", "values": {k: str(v)[:500] for k, v in values.items()}})

    def artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        rec = {"op": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path}
        self._record(rec)

    def finish(self, status: str = "FINISHED", wait_s: float = 60.0) -> str | None:
        """End the run once everything is uploaded; else a message saying how to upload it."""
        self._record({"op": "end", "status": status})
        deadline = time.monotonic() + wait_s
        while self.offline and time.monotonic() < deadline:
            time.sleep(max(0.0, min(self.retry_s, deadline - time.monotonic())))
            self._try_flush(force=True)
        if not self.offline:
            return None
        n = len(self._read()) - 1
        msg = (
            f"MLflow server {self.uri} is unreachable: {n} record(s) of run {self.run_id} are "
            f"kept in {self.buffer}. Upload them when the server is back with: "
            f"{sync_command(self.run_dir)}"
        )
        log.warning(msg)
        return msg

    # --- machinery ---------------------------------------------------------------------------
    def _apply(self, rec: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        op, ts = rec["op"], rec["ts"]
        if op == "metrics":
            ms = [Metric(k, float(v), ts, rec["step"]) for k, v in rec["values"].items()]
            self.client.log_batch(self.run_id, metrics=ms, synchronous=True)
        elif op == "params":
            ps = [Param(k, v) for k, v in rec["values"].items()]
            self.client.log_batch(self.run_id, params=ps, synchronous=True)
        elif op == "tags":
            tags = [RunTag(k, v) for k, v in rec["values"].items()]
            self.client.log_batch(self.run_id, tags=tags, synchronous=True)
        elif op == "artifact":
            if Path(rec["path"]).exists():  # a sample may have been rotated away meanwhile
                self.client.log_artifact(self.run_id, rec["path"], rec["artifact_path"])
        elif op == "end":
            self.client.set_terminated(self.run_id, rec["status"], end_time=ts)

    def _record(self, rec: dict[str, Any]) -> None:
        rec["ts"] = _now_ms()
        if not self.offline:
            try:
                self._apply(rec)
                return
            except Exception as e:  # any failure to reach the store: keep the record locally
                self.offline = True
                log.warning(
                    "MLflow server %s failed (%s); training goes on and tracking records are "
                    "buffered in %s until it is back",
                    self.uri,
                    tracking.one_line(e, 160),
                    self.buffer,
                )
        self._append(rec)
        self._try_flush()

    def _append(self, rec: dict[str, Any]) -> None:
        new = not self.buffer.exists()
        with open(self.buffer, "a") as f:
            if new:
                f.write(json.dumps({"op": "run", "uri": self.uri, "run_id": self.run_id}) + "\n")
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _read(self) -> list[dict[str, Any]]:
        if not self.buffer.exists():
            return []
        lines = self.buffer.read_text().splitlines()
        return [json.loads(ln) for ln in lines if ln.strip()]

    def _try_flush(self, force: bool = False) -> bool:
        if not force and time.monotonic() < self._next_probe:
            return False
        self._next_probe = time.monotonic() + self.retry_s
        if not _healthy(self.uri):
            return False
        return self.flush()

    def flush(self) -> bool:
        """Replay the buffer in order; True when all of it reached the server."""
        records = self._read()
        header, body = records[:1], [r for r in records if r["op"] != "run"]
        for i, rec in enumerate(body):
            try:
                self._apply(rec)
            except Exception as e:  # still away: keep what is left, in order
                rest = "".join(json.dumps(r) + "\n" for r in header + body[i:])
                atomic_write_bytes(self.buffer, rest.encode())
                log.debug("flush stopped after %d record(s): %s", i, e)
                return False
        self.buffer.unlink(missing_ok=True)
        if self.offline and body:
            log.warning("MLflow server %s is back: %d buffered record(s) sent", self.uri, len(body))
        self.offline = False
        return True


def _healthy(uri: str) -> bool:
    if not uri.startswith(("http://", "https://")):
        return True
    import requests

    try:
        return requests.get(uri.rstrip("/") + "/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def open_run(
    cfg: TrackingConfig,
    run_dir: Path,
    run_name: str,
    run_id: str | None = None,
    config: dict[str, Any] | None = None,
) -> RunLogger:
    """Create (or reopen) a run on a reachable store; fails now (``TrackingError``) otherwise.

    A first small artefact (``config.json``, the run's config) is written here, so a broken
    artefact store (wrong S3 credentials on the server, a missing bucket) fails the step before
    any long work.
    """
    import mlflow
    from mlflow.tracking.context.registry import resolve_tags

    tracking.setup(cfg)
    if (Path(run_dir) / BUFFER_FILE).is_file():
        sync(run_dir)  # an earlier run's kept records go first, into that run
    client = mlflow.tracking.MlflowClient(cfg.uri)
    try:
        if run_id is not None:
            client.update_run(run_id, status="RUNNING")
        else:
            exp = mlflow.get_experiment_by_name(cfg.experiment)
            run = client.create_run(exp.experiment_id, tags=resolve_tags(), run_name=run_name)
            run_id = run.info.run_id
    except Exception as e:  # MLflow raises many types; all mean "cannot use this store"
        raise tracking.TrackingError(
            f"cannot start a run on MLflow store {cfg.uri}: {tracking.one_line(e)}"
        ) from e
    try:
        client.log_text(run_id, json.dumps(config or {}, indent=2, sort_keys=True), "config.json")
    except Exception as e:  # the artefact store behind the server is broken
        with contextlib.suppress(Exception):  # best effort: the error below is what matters
            client.set_terminated(run_id, "FAILED")
        raise tracking.TrackingError(
            f"MLflow store {cfg.uri} cannot store artefacts: {tracking.one_line(e)}. Check the "
            "artefact store (for `mlflow server --serve-artifacts`: its --artifacts-destination, "
            "S3 credentials and MLFLOW_S3_ENDPOINT_URL); `cyclegan doctor` checks it."
        ) from e
    return RunLogger(cfg.uri, run_id, run_dir, retry_s=cfg.retry_s)


@dataclass
class SyncResult:
    run_dir: Path
    run_id: str
    records: int

    def summary(self) -> str:
        if not self.records:
            return f"{self.run_dir}: nothing to upload (no {BUFFER_FILE})"
        return f"uploaded {self.records} buffered record(s) of run {self.run_id} ({self.run_dir})"


def sync(run_dir: str | Path, uri: str | None = None) -> SyncResult:
    """Upload a run's buffered records (``cyclegan tracking sync RUN_DIR``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise tracking.TrackingError(
            f"run folder {run_dir} not found: pass the train.out_dir that printed the sync command"
        )
    buffer = run_dir / BUFFER_FILE
    if not buffer.is_file():
        return SyncResult(run_dir, "", 0)
    lines = [json.loads(ln) for ln in buffer.read_text().splitlines() if ln.strip()]
    if not lines or lines[0].get("op") != "run":
        raise tracking.TrackingError(f"{buffer}: not a tracking buffer (no header line)")
    header = lines[0]
    uri = uri or header["uri"]
    tracking.check_reachable(uri)
    logger = RunLogger(uri, header["run_id"], run_dir)
    if not logger.flush():
        left = len(logger._read()) - 1
        raise tracking.TrackingError(
            f"MLflow server {uri} failed while uploading; {left} record(s) remain in {buffer}. "
            f"Run `{sync_command(run_dir)}` again."
        )
    return SyncResult(run_dir, header["run_id"], len(lines) - 1)
