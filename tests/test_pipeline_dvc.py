"""The real `dvc` CLI runs the whole pipeline in a fresh git repo; remotes push and pull.

This is what `make run` does, on tiny params: data -> preprocess -> train -> evaluate -> export
-> register, then the promotion decision.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.train_utils import ROOT

BIN = Path(sys.executable).parent

TINY = {
    "data": {"synth": {"train": 12, "test": 4, "size": 32, "seed": 0}},
    "preprocess": {"size": 32},
    "transforms": {"load_size": 32, "crop_size": 32},
    "model": {"ngf": 8, "ndf": 8},
    "train": {
        "steps": 4,
        "batch_size": 2,
        "checkpoint_every": 2,
        "sample_every": 2,
        "eval_every": 2,
        "log_every": 1,
        "threads": 1,
    },
    "evaluate": {"bootstrap": 50, "classifier_steps": 20, "report_images": 2},
    "export": {"parity_sizes": [[32, 32], [48, 32]]},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    out = f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    assert res.returncode == 0, f"{' '.join(args)} failed:\n{out}"
    return res


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A new git repo holding this project's pipeline files (as a clean clone would)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = _env()
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
    ):
        _run(cmd, repo, env)
    return repo


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PATH=f"{BIN}:{env['PATH']}", OMP_NUM_THREADS="1", DVC_NO_ANALYTICS="1")
    return env


def test_dvc_repro_runs_everything_then_nothing(repo: Path) -> None:
    env = _env()
    first = _run([str(BIN / "dvc"), "repro"], repo, env)
    for stage in ("data", "preprocess", "train", "evaluate", "export", "register"):
        assert f"Running stage '{stage}'" in first.stdout, stage
    registered = json.loads((repo / "metrics/register.json").read_text())
    assert (registered["version"], registered["aliases"]) == ("1", ["challenger"])
    assert (repo / "data/processed/manifest.json").is_file()
    assert (repo / "runs/train/checkpoints/best.pt").is_file()
    assert (repo / "models/onnx/generator_AtoB.onnx").is_file()
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert metrics  # numbers the stage declared as DVC metrics
    second = _run([str(BIN / "dvc"), "repro"], repo, env)
    assert "Running stage" not in second.stdout
    assert "Data and pipelines are up to date." in second.stdout
    shown = _run([str(BIN / "dvc"), "metrics", "show", "--json"], repo, env)
    assert "eval.json" in shown.stdout
    _registry_after_repro(repo, env)

    # a params change re-runs only the stages that read it
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["export"]["tolerance"] = 0.002
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _run([str(BIN / "dvc"), "repro"], repo, env)
    assert "Running stage 'export'" in third.stdout
    for stage in ("data", "preprocess", "train", "evaluate"):
        assert f"Running stage '{stage}'" not in third.stdout, stage


def _registry_after_repro(repo: Path, env: dict[str, str]) -> None:
    """What `make run` does after `dvc repro`; lineage reaches the dataset through dvc.lock."""
    cli = [str(BIN / "cyclegan")]
    res = subprocess.run(
        [*cli, "promote", "--version", "1"],
        cwd=repo,
        env=env,
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert res.returncode in (0, 1), res.stderr[-2000:]  # refused is a decision, not a failure
    assert "cyclegan: version 1 " in res.stdout and "| AtoB.l1_to_gt | lower |" in res.stdout
    tree = json.loads(_run([*cli, "lineage", "models:/cyclegan/1", "--json"], repo, env).stdout)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["preprocess"]["outs"][0]
    assert tree["data_hash"] == lock["md5"] and tree["data_hash_source"] == "dvc.lock"
    assert tree["dataset"]["stage"] == "preprocess" and tree["dataset"]["matches_version"]
    assert tree["dataset"]["raw_source"] == "synth"


def test_dvc_push_pull_local_and_s3_remotes(repo: Path, s3_env: str) -> None:
    import boto3

    env = _env()
    dvc = str(BIN / "dvc")
    _run([dvc, "repro", "preprocess"], repo, env)
    _run([dvc, "push"], repo, env)  # the default local remote
    assert any((repo / ".dvc-storage").rglob("*")), "local remote received nothing"

    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket="cyclegan-data")
    # standard configuration only: the endpoint and credentials come from AWS_* variables
    assert "endpointurl" not in (repo / ".dvc" / "config").read_text()
    _run([dvc, "push", "-r", "s3"], repo, env)
    keys = boto3.client("s3", endpoint_url=s3_env).list_objects_v2(Bucket="cyclegan-data")
    assert keys.get("KeyCount", 0) > 0

    manifest = (repo / "data/processed/manifest.json").read_bytes()
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    _run([dvc, "pull", "-r", "s3", "preprocess"], repo, env)
    assert (repo / "data/processed/manifest.json").read_bytes() == manifest


def test_dvc_data_stage_reruns_but_never_empties_a_users_folder(repo: Path) -> None:
    """`data/raw` is `persist: true`: dvc leaves it to the stage, which replaces only its own
    (marked) output, so re-runs work and a user's folder in its place survives `dvc repro`."""
    env, dvc = _env(), str(BIN / "dvc")
    raw = repo / "data" / "raw"
    assert "Running stage 'data'" in _run([dvc, "repro", "data"], repo, env).stdout
    first = sorted(p.relative_to(raw) for p in raw.rglob("*"))
    image = (raw / "trainA" / "00000.png").read_bytes()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["synth"]["seed"] = 1  # a params change: dvc runs the stage over its output
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "Running stage 'data'" in _run([dvc, "repro", "data"], repo, env).stdout
    assert sorted(p.relative_to(raw) for p in raw.rglob("*")) == first  # replaced, not merged
    assert (raw / "trainA" / "00000.png").read_bytes() != image
    assert (raw / ".cyclegan-fetch.json").is_file()

    shutil.rmtree(raw)
    (raw / "trainA").mkdir(parents=True)
    (raw / "trainA" / "mine.png").write_bytes(b"my only copy")
    (raw / "NOTES.txt").write_text("labelling notes")
    res = subprocess.run(
        [dvc, "repro", "data"], cwd=repo, env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode != 0
    assert (
        "data/raw (data.raw_dir) already holds files that `cyclegan data fetch` did not write; "
        "refusing to replace them." in res.stdout + res.stderr
    )
    assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*")) == [
        "NOTES.txt",
        "trainA",
        "trainA/mine.png",
    ]
    assert (raw / "trainA" / "mine.png").read_bytes() == b"my only copy"
