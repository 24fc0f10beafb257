"""register / promote / rollback / lineage on a real MLflow server (PostgreSQL + S3 artefacts)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from cyclegan.cli import main
from cyclegan.promote import LOCK_SUFFIX, PromotionError, promote, read_log, rollback
from cyclegan.register import CHECKPOINT_TAG, register, sha256_file
from tests.registry_utils import BASE_MODEL, METRIC, RegistryBench, gate
from tests.train_utils import cli_env


@pytest.fixture
def bench(registry_bench: RegistryBench, monkeypatch: pytest.MonkeyPatch) -> RegistryBench:
    monkeypatch.chdir(registry_bench.tmp)
    return registry_bench


def _client(bench: RegistryBench) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(bench.server.uri)


def _aliases(bench: RegistryBench, name: str) -> dict[str, str]:
    return dict(_client(bench).get_registered_model(name).aliases)


def _log(bench: RegistryBench, name: str) -> list[dict]:
    return read_log(_client(bench).get_registered_model(name))


def test_register_is_idempotent_and_carries_the_evidence(bench: RegistryBench) -> None:
    c1 = bench.candidates[0]
    assert c1.registered.created and c1.registered.version == "1"
    again = register(c1.cfg, onnx_dir=bench.tmp / "onnx")
    assert (again.created, again.version) == (False, "1")
    assert [c.registered.version for c in bench.candidates] == ["1", "2", "3"]
    assert _aliases(bench, BASE_MODEL) == {"challenger": "3"}  # the newest candidate

    tags = _client(bench).get_model_version(BASE_MODEL, "1").tags
    ckpt = Path(c1.cfg.train.out_dir) / "checkpoints" / "best.pt"
    assert tags[CHECKPOINT_TAG] == sha256_file(ckpt)
    train_run = (Path(c1.cfg.train.out_dir) / "mlflow_run_id.txt").read_text().strip()
    assert tags["training_run_id"] == train_run == tags["evaluation_run_id"]
    params = _client(bench).get_run(train_run).data.params
    assert tags["git_commit"] == params["git_commit"]
    assert tags["params_hash"] == c1.cfg.hash()
    manifest = bench.tmp / "data" / "processed" / "manifest.json"
    assert tags["data_hash"] == f"sha256:{sha256_file(manifest)[:32]}"
    assert float(tags[f"metric.{METRIC}"]) == pytest.approx(c1.l1)
    assert (
        float(tags[f"metric.{METRIC}.ci_low"]) <= c1.l1 <= float(tags[f"metric.{METRIC}.ci_high"])
    )
    assert "n=4" in tags[f"metric.{METRIC}.protocol"]
    parity = json.loads((bench.tmp / "onnx" / "export.json").read_text())["parity"]
    assert float(tags["onnx_parity_max_abs"]) == max(r["max_abs"] for r in parity)

    # models-from-code: the model is a .py file, no pickled object; checkpoint and ONNX inside
    local = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{BASE_MODEL}/1", tracking_uri=bench.server.uri
        )
    )
    files = {p.name for p in local.rglob("*") if p.is_file()}
    assert {"mlflow_model.py", "generator_AtoB.onnx", "generator_BtoA.onnx", "best.pt"} <= files
    assert not any(f.endswith(".pkl") for f in files)


def test_no_champion_uses_absolute_thresholds(bench: RegistryBench) -> None:
    name = bench.fresh("nochamp")
    l1 = bench.candidates[0].l1
    strict = bench.params(gates=[gate(threshold=l1 - 1e-3)])
    res = promote(strict, name, "1")
    assert not res.accepted and res.champion_before is None
    assert res.rows[0].reason == f"above threshold {l1 - 1e-3:g}"
    assert "champion" not in _aliases(bench, name)
    loose = bench.params(gates=[gate(threshold=l1 + 1e-3)])
    assert promote(loose, name, "1", dry_run=True).accepted
    assert len(_log(bench, name)) == 1  # a dry run records nothing
    res = promote(loose, name, "1")
    assert res.accepted and _aliases(bench, name)["champion"] == "1"
    tags = _client(bench).get_model_version(name, "1").tags
    assert tags["promotion.decision"] == "accepted" and tags["promotion.seq"] == "2"


def test_worse_candidate_is_refused_and_champion_stays(
    bench: RegistryBench, capsys: pytest.CaptureFixture[str]
) -> None:
    name = bench.fresh("worse")
    best, _, worst = bench.by_quality()
    params = bench.params_file("worse")
    assert main(["promote", "--model", name, "--version", best, "--params", str(params)]) == 0
    capsys.readouterr()
    code = main(["promote", "--model", name, "--version", worst, "--params", str(params)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"version {worst} REFUSED against @champion version {best}" in out
    assert f"| {METRIC} | lower |" in out and "FAIL: improves on champion by" in out
    aliases = _aliases(bench, name)
    assert aliases["champion"] == best and aliases["challenger"] == "3"
    log = _log(bench, name)
    assert [(e["candidate"], e["accepted"]) for e in log] == [(best, True), (worst, False)]
    assert _client(bench).get_model_version(name, worst).tags["promotion.decision"] == "refused"


def test_rollback_restores_previous(bench: RegistryBench) -> None:
    name = bench.fresh("rollback")
    cfg = bench.params(gates=[gate(min_margin=-10.0)])  # any candidate passes
    promote(cfg, name, "1")
    promote(cfg, name, "2")
    assert _aliases(bench, name) == {"champion": "2", "previous": "1", "challenger": "3"}
    res = rollback(cfg, name)
    assert (res.champion_before, res.champion_after, res.action) == ("2", "1", "rollback")
    assert _aliases(bench, name) == {"champion": "1", "challenger": "3"}
    assert [e["action"] for e in _log(bench, name)] == ["promote", "promote", "rollback"]
    with pytest.raises(PromotionError, match=r"has no @previous version to roll back to"):
        rollback(cfg, name)


def test_deleted_champion_and_unknown_model_are_clear_errors(
    bench: RegistryBench, capsys: pytest.CaptureFixture[str]
) -> None:
    name = bench.fresh("deleted")
    params = bench.params_file("deleted", gates=[gate(min_margin=-10.0)])
    args = ["--params", str(params)]
    assert main(["promote", "--model", name, "--version", "1", *args]) == 0
    assert main(["promote", "--model", name, "--version", "2", *args]) == 0
    _client(bench).delete_model_version(name, "2")
    capsys.readouterr()
    assert main(["promote", "--model", name, "--version", "3", *args]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: model '{name}': its @champion, version 2, was deleted from the registry; run "
        f"`cyclegan rollback --model {name}` first (it restores @previous (version 1))\n"
    )
    assert main(["rollback", "--model", name, *args]) == 0
    assert _aliases(bench, name)["champion"] == "1"

    assert main(["promote", "--model", "no-such-model", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: registered model 'no-such-model' not found in http://127.0.0.1:")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert main(["lineage", "models:/no-such-model@champion", *args]) == 2
    assert main(["lineage", "cyclegan@champion", *args]) == 2
    assert "is not a model URI: use models:/NAME@ALIAS" in capsys.readouterr().err


_RACER = """
import sys, time
from cyclegan.cli import main
start = float(sys.argv[1])
time.sleep(max(0.0, start - time.time()))
sys.exit(main(sys.argv[2:]))
"""


def test_two_concurrent_promotions_give_one_consistent_outcome(bench: RegistryBench) -> None:
    name = bench.fresh("race")
    params = bench.params_file("race", gates=[gate(min_margin=-10.0)])
    promote(bench.params(gates=[gate(min_margin=-10.0)]), name, "1")
    start = time.time() + 15  # both processes have imported everything by then
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _RACER,
                str(start),
                "promote",
                "--model",
                name,
                "--version",
                v,
                "--params",
                str(params),
                "--json",
            ],
            cwd=bench.tmp,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for v in ("2", "3")
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    log = _log(bench, name)
    assert [e["seq"] for e in log] == [1, 2, 3]
    assert sorted(e["candidate"] for e in log[1:]) == ["2", "3"]
    for before, after in itertools.pairwise(log):  # each decision saw the one before it
        assert after["champion_before"] == before["champion_after"]
    aliases = _aliases(bench, name)
    assert aliases["champion"] == log[-1]["candidate"]
    assert aliases["previous"] == log[-1]["champion_before"] == log[1]["candidate"]
    assert not any(m.name == name + LOCK_SUFFIX for m in _client(bench).search_registered_models())


def test_a_stale_lock_of_a_crashed_promotion_is_broken(bench: RegistryBench) -> None:
    name = bench.fresh("stale")
    _client(bench).create_registered_model(
        name + LOCK_SUFFIX, tags={"owner": "crashed:1", "since": repr(time.time() - 3600)}
    )
    res = promote(bench.params(gates=[gate()], lock_timeout_s=5), name, "1")
    assert res.accepted and res.seq == 1


def test_lineage_of_the_champion(bench: RegistryBench, capsys: pytest.CaptureFixture[str]) -> None:
    name = bench.fresh("lineage")
    params = bench.params_file("lineage", gates=[gate(min_margin=-10.0)])
    assert main(["promote", "--model", name, "--version", "1", "--params", str(params)]) == 0
    capsys.readouterr()
    assert main(["lineage", f"models:/{name}@champion", "--json", "--params", str(params)]) == 0
    tree = json.loads(capsys.readouterr().out)
    c1 = bench.candidates[0]
    run_id = (Path(c1.cfg.train.out_dir) / "mlflow_run_id.txt").read_text().strip()
    assert (tree["version"], tree["aliases"]) == ("1", ["champion"])
    assert tree["training_run"]["id"] == run_id == tree["evaluation_run"]["id"]
    assert tree["training_run"]["params"]["train.steps"] == "4"
    assert tree["params_hash"] == c1.cfg.hash()
    assert tree["git_commit"] == tree["training_run"]["params"]["git_commit"]
    assert tree["data_hash"].startswith("sha256:")
    assert tree["dataset"]["path"] == c1.cfg.data.processed_dir
    assert [e["candidate"] for e in tree["promotions"]] == ["1"]
    assert main(["lineage", f"models:/{name}/1", "--params", str(params)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"models:/{name}/1 -> {name} version 1 (@champion)")
    assert f"training run {run_id}" in text and "git commit" in text and "data hash" in text
