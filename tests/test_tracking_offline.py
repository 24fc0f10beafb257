"""A real `mlflow server` SIGKILLed in the middle of training: training goes on, records are
buffered with a warning, flushed when the server is back, and kept locally (with the exact
upload command) when it is not; `cyclegan tracking sync` then completes the run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cyclegan.cli import main
from cyclegan.tracking_buffer import BUFFER_FILE
from cyclegan.train import train
from tests.train_utils import make_synth, tiny_cfg

STEPS = 8


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synth(tmp_path_factory.mktemp("data") / "synth", train=8, test=2)


def test_server_killed_mid_training_then_back_then_gone(
    synth: Path,
    tmp_path: Path,
    mlflow_server,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast: keep the test short
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # restarts 2-3x faster
    client = mlflow.tracking.MlflowClient(mlflow_server.uri)
    seen: dict[int, tuple[list[int], bool]] = {}
    run_dir = tmp_path / "run"

    def evaluator(g_ab, g_ba) -> dict[str, float]:
        step = len(seen) * 2 + 2
        if step == 2:
            mlflow_server.kill()  # SIGKILL mid-run; steps 3-4 are buffered
        elif step == 4:
            mlflow_server.start()  # back: the next record flushes the buffer
        elif step == 6:
            run_id = (run_dir / "mlflow_run_id.txt").read_text()
            history = client.get_metric_history(run_id, "G")
            seen[step] = ([m.step for m in history], (run_dir / BUFFER_FILE).exists())
            mlflow_server.kill()  # and gone for good: steps 7-8 and the end stay local
        seen.setdefault(step, ([], False))
        return {"score": 1.0}

    cfg = tiny_cfg(
        tmp_path,
        synth,
        train={"steps": STEPS, "eval_every": 2, "checkpoint_every": 2, "sample_every": 3},
        tracking={
            "enabled": True,
            "uri": mlflow_server.uri,
            "experiment": "offline",
            "timeout_s": 5.0,
            "retry_s": 0.1,
            "flush_wait_s": 1.0,
        },
    )
    with caplog.at_level(logging.WARNING, logger="cyclegan.tracking"):
        try:
            result = train(cfg, evaluator=evaluator)
        finally:
            mlflow_server.start()  # the server is shared by the session
    # training went on through both outages; while it was back, the buffer was flushed
    assert (run_dir / "checkpoints" / f"step_{STEPS:08d}.pt").is_file()
    assert seen[6] == ([1, 2, 3, 4, 5, 6], False)
    assert f"records are buffered in {run_dir / BUFFER_FILE}" in caplog.text
    assert "is back: " in caplog.text
    # gone at the end: everything is kept locally and the summary says how to upload it
    run_id = result.mlflow_run_id
    records = [json.loads(ln) for ln in (run_dir / BUFFER_FILE).read_text().splitlines()]
    assert records[0] == {"op": "run", "uri": mlflow_server.uri, "run_id": run_id}
    assert records[-1]["op"] == "end" and records[-1]["status"] == "FINISHED"
    assert result.warnings[-1] == (
        f"MLflow server {mlflow_server.uri} is unreachable: {len(records) - 1} record(s) of run "
        f"{run_id} are kept in {run_dir / BUFFER_FILE}. Upload them when the server is back "
        f"with: cyclegan tracking sync {run_dir}"
    )
    assert f"cyclegan tracking sync {run_dir}" in result.summary()

    # the server is back (restarted on the same port and stores): sync completes the run
    assert main(["tracking", "sync", str(run_dir)]) == 0
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "G")] == list(range(1, STEPS + 1))
    assert run.data.tags["best_step"] == "2"
    arts = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    assert arts == {"checkpoints/last.pt", "checkpoints/best.pt"}
    samples = {a.path for a in client.list_artifacts(run_id, "samples")}
    assert samples == {f"samples/step_{s:08d}.png" for s in (3, 6, 8)}
    assert not (run_dir / BUFFER_FILE).exists()
    assert main(["tracking", "sync", str(run_dir)]) == 0  # idempotent: nothing left to upload
