"""The test servers are the real thing: runs land in PostgreSQL, artefacts in S3 via the proxy."""

from __future__ import annotations

import mlflow
import pytest

from tests.servers import MlflowServer, Postgres, S3Server


def test_mlflow_server_stores_runs_in_postgres_and_artifacts_in_s3(
    mlflow_server: MlflowServer,
    postgres: Postgres,
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)  # clients need no S3 credentials
    client = mlflow.MlflowClient(mlflow_server.uri)
    exp = client.create_experiment("servers-smoke")
    run = client.create_run(exp)
    client.log_text(run.info.run_id, "hello", "probe/hello.txt")
    client.set_terminated(run.info.run_id)

    keys = [
        o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_server.bucket)["Contents"]
    ]
    assert f"mlflow/{exp}/{run.info.run_id}/artifacts/probe/hello.txt" in keys
    sql = f"SELECT status FROM runs WHERE run_uuid = '{run.info.run_id}'"
    assert postgres.query(sql, "mlflow") == [("FINISHED",)]
    assert postgres.uri("mlflow") == mlflow_server.backend_store_uri
