"""`cyclegan doctor`: a reachable local setup passes; a dead server, a foreign web page, a bad
sqlite folder and bad S3 settings are each named with how to fix them."""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cyclegan import tracking
from cyclegan.cli import main
from cyclegan.config import config_from_dict
from cyclegan.data.synth import synthesize
from cyclegan.doctor import doctor
from tests.servers import free_port
from tests.train_utils import dvc

SECTIONS = {"tracking", "artifacts", "dvc_remote", "s3", "weights", "device", "precision"}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git + DVC project with a local default remote, as `make run` sets up."""
    repo = tmp_path / "proj"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc("init", "-q", cwd=repo)
    dvc("remote", "add", "-d", "local", "../dvc-storage", cwd=repo)
    (tmp_path / "dvc-storage").mkdir()
    monkeypatch.chdir(repo)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weights cached
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    return repo


def _params(path: Path, **sections: dict) -> list[str]:
    import yaml

    raw = {"tracking": {"uri": "sqlite:///mlflow.db", "timeout_s": 2.0}, **sections}
    path.write_text(yaml.safe_dump(raw))
    return ["--params", str(path)]


def test_doctor_reports_reachable_local_setup(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cyclegan.evaluation.weights import INCEPTION_FILENAME, hub_cache_path

    cfg = config_from_dict({"tracking": {"uri": "sqlite:///mlflow.db"}})
    tracking.setup(cfg.tracking)  # an existing store: the probe really writes and reads
    cached = hub_cache_path(INCEPTION_FILENAME)  # under the test's TORCH_HOME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the official file")
    assert main(["doctor", "--json", *_params(project / "p.yaml")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == SECTIONS
    assert report["tracking"]["status"] == "ok" and report["tracking"]["required"]
    assert report["artifacts"]["status"] == "ok"
    assert "wrote and read back a probe object" in report["artifacts"]["detail"]
    assert report["dvc_remote"]["status"] == "ok"
    assert report["dvc_remote"]["facts"]["default"] == "local"
    assert report["s3"]["status"] == "skipped"
    # weights missing but not required: a warning that says how to supply them, exit 0
    assert report["weights"]["status"] == "warning" and not report["weights"]["required"]
    assert report["weights"]["detail"].startswith("missing: alexnet-owt-7be5be79.pth (FID/KID")
    assert "evaluate.lpips_backbone_weights" in report["weights"]["fix"]
    found = report["weights"]["facts"][INCEPTION_FILENAME]
    assert found == f"hub-cache {cached}, not the official file"
    assert report["device"]["facts"]["device"] == "cpu" and report["device"]["facts"]["cpu"]
    precision = report["precision"]
    assert precision["auto"] in ("none", "bf16") and precision["facts"]["amp"] == "auto"
    assert precision["resolved"] == {"none": "fp32"}.get(precision["auto"], precision["auto"])
    assert {"none", "bf16"} <= set(precision["probe"]["seconds"]), precision["probe"]
    # the probe left nothing behind: its run is deleted and no probe object remains
    import mlflow

    client = mlflow.tracking.MlflowClient("sqlite:///mlflow.db")
    exp = client.get_experiment_by_name("cyclegan")
    assert client.search_runs([exp.experiment_id]) == []
    assert not list((project / "mlartifacts").rglob("probe.txt"))

    # the same params requiring the weights: now it is an error and the exit code says so
    args = _params(project / "p.yaml", evaluate={"require_weights": True})
    assert main(["doctor", *args]) == 1
    out = capsys.readouterr().out
    assert "missing for these params: weights" in out


def test_doctor_names_dead_tracking_port(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    args = _params(project / "p.yaml", tracking={"uri": uri, "timeout_s": 2.0})
    assert main(["doctor", "--json", *args]) == 1
    report = json.loads(capsys.readouterr().out)
    row = report["tracking"]
    assert row["status"] == "error" and row["required"]
    assert row["detail"] == (
        f"MLflow tracking server {uri} is unreachable (ConnectionError). Start it, fix "
        "tracking.uri, or set tracking.enabled=false to train without tracking."
    )
    assert row["fix"].startswith("start the server (mlflow server --host 0.0.0.0")
    assert report["artifacts"]["status"] == "error"
    assert main(["doctor", *args]) == 1
    assert "missing for these params: tracking, artifacts" in capsys.readouterr().out
    args = _params(project / "p.yaml", tracking={"uri": uri, "enabled": False})
    assert main(["doctor", *args]) == 0  # not required when tracking is off


def _refused_everywhere(uri: str, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The same one line from the store set-up, from `cyclegan train` (exit 2) and doctor."""
    cfg = config_from_dict({"tracking": {"uri": uri}})
    with pytest.raises(tracking.TrackingError) as err:
        tracking.setup(cfg.tracking)
    assert str(err.value) == expected
    # real training data, so that the tracking store is what train refuses (data is checked first)
    synthesize("data/processed", train=2, test=1, size=16, seed=0)
    capsys.readouterr()  # the synth progress bar
    assert main(["train", "--set", f"tracking.uri={uri}"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {expected}"
    report = doctor(cfg)
    assert report.section("tracking").detail == expected and not report.ok


def test_sqlite_store_in_missing_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = "sqlite:////nonexistent-cyclegan/dir/mlflow.db"
    expected = (
        f"tracking.uri {uri}: folder /nonexistent-cyclegan/dir does not exist. Create it, or "
        "point tracking.uri at a file in an existing folder (e.g. sqlite:///mlflow.db)."
    )
    _refused_everywhere(uri, expected, capsys)
    assert not Path("/nonexistent-cyclegan").exists()
    # under the current directory the folder is created (the project's own layout)
    tracking.check_sqlite_parent("sqlite:///stores/a/m.db")
    assert (tmp_path / "stores" / "a").is_dir()


PAGE = b"<!DOCTYPE html><html><head><title>Welcome to nginx!</title></head><body>" + b"x" * 900


class _HtmlHandler(BaseHTTPRequestHandler):
    """A web server that is not MLflow: the same HTML page for every path."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


def test_tracking_uri_answering_html_gives_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HtmlHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.chdir(tmp_path)
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        expected = (
            f"{uri} is not an MLflow tracking server: GET /health answered HTTP 200 with an HTML "
            f"page titled 'Welcome to nginx!' ({len(PAGE)} bytes). Set tracking.uri to the "
            "server's base address (e.g. http://host:5000)."
        )
        _refused_everywhere(uri, expected, capsys)
        assert not (tmp_path / "runs").exists()  # refused before any work
    finally:
        server.shutdown()
        server.server_close()
