"""S3 from standard configuration only: wrong credentials, a missing bucket and an unreachable
endpoint each give one clear error before any long work (import, doctor, train's artefact
store behind a real `mlflow server --serve-artifacts`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cyclegan.cli import main
from cyclegan.config import config_from_dict
from cyclegan.doctor import doctor
from tests.servers import free_port
from tests.train_utils import dvc, make_synth, tiny_params, write_params


def _import_error(uri: str, out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """`data import URI OUT` exits 2; its error line (the S3 server's log may share stderr)."""
    assert main(["data", "import", uri, str(out)]) == 2
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")][-1]


def test_import_errors_name_the_cause(
    s3_env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    assert _import_error("s3://no-such-bucket/ds", out, capsys) == (
        "error: cannot fetch dataset 's3://no-such-bucket/ds': cannot read s3://no-such-bucket/ds:"
        f" S3 bucket 'no-such-bucket' does not exist at endpoint {s3_env}; create it or fix the "
        "URI"
    )
    from moto.core.authorization import enable_iam_authentication

    with enable_iam_authentication():
        err = _import_error("s3://cyclegan-test/ds", out, capsys)
    assert err == (
        "error: cannot fetch dataset 's3://cyclegan-test/ds': cannot read s3://cyclegan-test/ds: "
        f"S3 endpoint {s3_env} rejected the credentials (InvalidAccessKeyId); check "
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
    )
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    assert _import_error("s3://cyclegan-test/ds", out, capsys) == (
        "error: cannot fetch dataset 's3://cyclegan-test/ds': cannot read s3://cyclegan-test/ds: "
        f"S3 endpoint {dead} is unreachable (EndpointConnectionError); check AWS_ENDPOINT_URL"
    )
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_doctor_s3_and_dvc_remote_rows(
    s3_env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = tmp_path / "proj"
    repo.mkdir()
    dvc("init", "-q", "--no-scm", cwd=repo)
    dvc("remote", "add", "-d", "s3", "s3://missing-bucket/dvc", cwd=repo)  # endpoint from AWS_*
    monkeypatch.chdir(repo)
    capsys.readouterr()  # DVC's greeting
    raw = {"data": {"source": "s3://cyclegan-test/ds"}, "tracking": {"enabled": False}}
    report = doctor(config_from_dict(raw))
    s3 = report.section("s3")
    assert (s3.status, s3.required) == ("ok", True)
    assert s3.facts["endpoint"] == s3_env and s3.facts["credentials"] == "env"
    remote = report.section("dvc_remote")
    assert remote.status == "warning"
    assert "remote 's3' (s3://missing-bucket/dvc) unreachable" in remote.detail
    assert "S3 bucket 'missing-bucket' does not exist" in remote.detail
    assert remote.fix.startswith("see the s3 row: AWS_ENDPOINT_URL")

    raw["data"]["source"] = "s3://missing-bucket/ds"
    args = ["doctor", "--json", "--params", str(write_params(tmp_path / "p.yaml", raw))]
    assert main(args) == 1  # the data source is required by these params
    row = json.loads(capsys.readouterr().out)["s3"]
    assert row["status"] == "error" and row["required"]
    assert row["detail"] == (
        "data.source: cannot use s3://missing-bucket/ds: S3 bucket 'missing-bucket' does not "
        f"exist at endpoint {s3_env}; create it or fix the URI"
    )


def test_train_fails_at_start_when_the_servers_artifact_store_refuses(
    mlflow_server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moto.core.authorization import enable_iam_authentication

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    synth = make_synth(tmp_path / "synth", train=4, test=2)
    tracking = {"enabled": True, "uri": mlflow_server.uri, "experiment": "s3-refused"}
    params = write_params(tmp_path / "p.yaml", tiny_params(tmp_path, synth, tracking=tracking))
    monkeypatch.chdir(tmp_path)
    with enable_iam_authentication():  # the server's S3 keys are refused from now on
        assert main(["train", "--params", str(params)]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")][-1]
        assert main(["doctor", "--json", "--params", str(params)]) == 1
        row = json.loads(capsys.readouterr().out)["artifacts"]
    assert err.startswith(f"error: MLflow store {mlflow_server.uri} cannot store artefacts: ")
    assert err.endswith(
        "Check the artefact store (for `mlflow server --serve-artifacts`: its "
        "--artifacts-destination, S3 credentials and MLFLOW_S3_ENDPOINT_URL); `cyclegan doctor` "
        "checks it."
    )
    assert "\n" not in err and "<html" not in err.lower()
    assert not list((tmp_path / "run").glob("checkpoints/*.pt"))  # nothing trained
    assert row["status"] == "error" and row["detail"].startswith("probe write/read failed: ")
    assert main(["doctor", "--json", "--params", str(params)]) == 0  # the store is healthy again
    report = json.loads(capsys.readouterr().out)
    assert report["artifacts"]["status"] == "ok"
    assert report["artifacts"]["facts"]["location"].startswith("mlflow-artifacts:")
    import mlflow

    assert report["tracking"]["status"] == "ok"
    assert report["tracking"]["facts"]["server_version"] == mlflow.__version__
