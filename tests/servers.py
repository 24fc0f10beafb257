"""Real servers for tests: S3 (moto) and PostgreSQL on this machine, an ``mlflow server`` on both.

Fixtures (session-scoped, registered in ``tests/conftest.py``):

* ``s3_env``: ``s3_server`` plus ``AWS_*`` variables set for this test (boto3, dvc-s3).
* ``s3_server`` -> :class:`S3Server`: moto's S3 HTTP API on 127.0.0.1 with one bucket made. It
  *is* the endpoint URL (a ``str``) so older tests that use it as one keep working; ``.endpoint``,
  ``.bucket``, ``.env()`` (the variables a process needs) and ``.client()`` say the rest.
* ``postgres`` -> :class:`Postgres`: a real PostgreSQL (``pgserver``: the server binaries from a
  pip wheel) listening on a unix socket; ``.database(name)`` creates one and returns its
  SQLAlchemy URI.
* ``mlflow_server`` -> :class:`MlflowServer`: ``mlflow server`` as a subprocess on a free
  127.0.0.1 port, backend store in PostgreSQL, ``--serve-artifacts`` proxied to
  ``s3://<bucket>/mlflow``. Only the server holds S3 credentials; clients talk HTTP to ``.uri``.
  ``.kill()`` (SIGKILL, like a crash), ``.stop()``, ``.start()`` / ``.restart()`` (same port and
  stores, waits for ``/health``). Tests that kill it must ``restart()`` it before they end
  (or use ``with mlflow_server.down(): ...``) because the server is shared by the session.

Everything listens on 127.0.0.1 or a unix socket and lives under pytest's temporary folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early when ``proc`` has exited."""
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else b""  # a pipe: say why it stopped
            tail = (err.decode(errors="replace") if isinstance(err, bytes) else err)[-3000:]
            raise RuntimeError(
                f"{proc.args[:2]} exited with {proc.returncode} before {url} was up:\n{tail}"
            )
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s")


# --- S3 -------------------------------------------------------------------------------------


class S3Server(str):
    """The endpoint URL of a running S3 server, plus the bucket made for the session."""

    endpoint: str
    bucket: str

    def __new__(cls, endpoint: str, bucket: str) -> S3Server:
        obj = super().__new__(cls, endpoint)
        obj.endpoint, obj.bucket = endpoint, bucket
        return obj

    def env(self) -> dict[str, str]:
        """What a process needs to reach this server with boto3, DVC or an MLflow server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            **S3_CREDENTIALS,
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
        )


@contextlib.contextmanager
def start_s3(bucket: str = "cyclegan-test") -> Iterator[S3Server]:
    """moto's threaded S3 server on a free 127.0.0.1 port, with ``bucket`` created."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        s3 = S3Server(f"http://127.0.0.1:{port}", bucket)
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()


# --- PostgreSQL -----------------------------------------------------------------------------


@dataclass
class Postgres:
    """A running PostgreSQL (pgserver) reached through its unix socket."""

    server: Any  # pgserver.PostgresServer
    pgdata: Path

    def uri(self, database: str = "postgres") -> str:
        """SQLAlchemy URI with the psycopg2 driver (bare ``postgresql://`` means psycopg 3)."""
        return self.server.get_uri(database).replace("postgresql://", "postgresql+psycopg2://", 1)

    def query(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Rows of one SQL statement, straight from PostgreSQL (not through MLflow)."""
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.uri(database))
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(sqlalchemy.text(sql))]
        finally:
            engine.dispose()

    def database(self, name: str) -> str:
        """Create database ``name`` (if new) and return its URI."""
        if not self.query(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
            self.server.psql(f'CREATE DATABASE "{name}";')
        return self.uri(name)


@contextlib.contextmanager
def start_postgres() -> Iterator[Postgres]:
    """initdb + start in a fresh folder (about a second); stopped and deleted afterwards.

    The folder is not under pytest's ``pytest-of-<user>``: as root, pgserver runs PostgreSQL as
    an unprivileged user that must traverse every parent, and pytest resets that folder to 0700
    whenever a pytest session starts.
    """
    folder = Path(tempfile.mkdtemp(prefix="cyclegan-pg-"))
    folder.chmod(0o755)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset (it uses /tmp)
        import pgserver

        server = pgserver.get_server(folder / "pgdata", cleanup_mode="delete")
    try:
        yield Postgres(server, folder / "pgdata")
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


# --- MLflow server --------------------------------------------------------------------------


@dataclass
class MlflowServer:
    """``mlflow server`` (PostgreSQL backend, artefacts proxied to S3) as a subprocess."""

    backend_store_uri: str
    artifacts_destination: str
    server_env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    start_timeout_s: float = 180.0
    proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start (no-op when running) and wait until ``/health`` answers."""
        if self.running:
            return
        cmd = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            self.backend_store_uri,
            "--serve-artifacts",
            "--artifacts-destination",
            self.artifacts_destination,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",  # requests are served by a thread pool; one worker keeps the start short
        ]
        with self.log_path.open("a") as log:  # the child keeps its own handle
            self.proc = subprocess.Popen(
                cmd,
                env={**os.environ, **self.server_env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() reaches the workers
            )
        try:
            wait_http(f"{self.uri}/health", self.start_timeout_s, self.proc)
        except (RuntimeError, TimeoutError) as e:
            self.kill()
            tail = self.log_path.read_text()[-3000:]
            raise RuntimeError(f"mlflow server did not start: {e}\n{tail}") from e

    def _signal(self, sig: int, wait_s: float) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the server and its workers, as a crash or an OOM kill would."""
        self._signal(signal.SIGKILL, 10)

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM), SIGKILL after 5 s (clients' keep-alive sockets hold it)."""
        self._signal(signal.SIGTERM, 5)

    def restart(self) -> None:
        """Start again on the same port with the same stores (after ``kill`` or ``stop``)."""
        self.stop()
        self.start()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """The server is dead inside the block and healthy again after it."""
        self.kill()
        try:
            yield
        finally:
            self.start()


@contextlib.contextmanager
def start_mlflow(postgres: Postgres, s3: S3Server, folder: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(
        backend_store_uri=postgres.database("mlflow"),
        artifacts_destination=f"s3://{s3.bucket}/mlflow",
        server_env={**s3.env(), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"},
        log_path=folder / "mlflow-server.log",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- fixtures (imported by tests/conftest.py) -----------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 HTTP API (moto's server) on 127.0.0.1 with the bucket ``cyclegan-test``."""
    with start_s3() as s3:
        yield s3


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL for the session (pgserver; works as root)."""
    with start_postgres() as pg:
        yield pg


@pytest.fixture(scope="session")
def mlflow_server(
    postgres: Postgres, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """One real MLflow tracking server + registry for the session (PostgreSQL, S3 artefacts)."""
    with start_mlflow(postgres, s3_server, tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 (and dvc-s3) at the local S3 server with dummy credentials."""
    for key, value in s3_server.env().items():
        if key != "MLFLOW_S3_ENDPOINT_URL":
            monkeypatch.setenv(key, value)
    return s3_server.endpoint
