"""Training: learning signal, sample grids, MLflow, NaN stop, exact resume after SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cyclegan.config import config_from_dict
from cyclegan.tracking import TrackingError
from cyclegan.train import train
from cyclegan.training.distributed import DistributedStreamSampler
from cyclegan.training.step import NonFiniteLossError
from tests.train_utils import (
    cli_env,
    make_synth,
    net_weights,
    tiny_cfg,
    tiny_params,
    write_params,
)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth"))


def test_sampler_splits_one_stream_across_ranks() -> None:
    def take(sampler: DistributedStreamSampler, n: int) -> list[tuple[int, int]]:
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    single = take(DistributedStreamSampler(5, seed=3, rank=0, world_size=1, batch_size=2), 8)
    r0 = take(DistributedStreamSampler(5, seed=3, rank=0, world_size=2, batch_size=1), 4)
    r1 = take(DistributedStreamSampler(5, seed=3, rank=1, world_size=2, batch_size=1), 4)
    # step s of the single process (batch 2) == rank 0's and rank 1's item of step s
    assert [p for pair in zip(r0, r1, strict=True) for p in pair] == single
    # every epoch is a permutation of all indices; epochs are shuffled differently
    assert sorted(i for _, i in single[:5]) == [0, 1, 2, 3, 4]
    resumed = take(
        DistributedStreamSampler(5, seed=3, rank=0, world_size=1, batch_size=2, start_step=2), 4
    )
    assert resumed == single[4:8]


def test_short_run_learns_logs_and_draws(synth: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(
        tmp_path,
        synth,
        train={
            "steps": 40,
            "log_every": 5,
            "sample_every": 20,
            "checkpoint_every": 20,
            "out_dir": str(tmp_path / "r"),
        },
        tracking={"enabled": True},
    )
    result = train(cfg)
    lines = (tmp_path / "r" / "train_log.jsonl").read_text().splitlines()
    log = [json.loads(line) for line in lines]
    assert [r["step"] for r in log] == list(range(5, 41, 5))
    for key in ("G", "D", "G_AB", "G_BA", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B"):
        assert key in log[0], key
    first, last = log[0], log[-1]
    assert last["cycle_A"] + last["cycle_B"] < 0.7 * (first["cycle_A"] + first["cycle_B"])
    assert last["idt_A"] + last["idt_B"] < first["idt_A"] + first["idt_B"]
    assert (tmp_path / "r" / "samples" / "step_00000040.png").is_file()
    assert result.last_checkpoint.is_file() and result.best_checkpoint is not None
    assert result.global_batch == 2 and result.images_per_s > 0

    import mlflow

    mlflow.set_tracking_uri(cfg.tracking.uri)
    run = mlflow.get_run(result.mlflow_run_id)
    assert run.data.params["model.generator"] == "resnet_6blocks"
    assert run.data.params["global_batch"] == "2"
    assert "version.torch" in run.data.params and "git_commit" in run.data.params
    assert run.data.metrics["cycle_A"] == pytest.approx(last["cycle_A"])
    history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "G")
    assert len(history) == 8
    arts = {
        a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run.info.run_id, "samples")
    }
    assert "samples/step_00000040.png" in arts


def test_unreachable_tracking_server_fails_fast(synth: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(
        tmp_path, synth, tracking={"enabled": True, "uri": "http://127.0.0.1:9", "timeout_s": 2.0}
    )
    t0 = time.perf_counter()
    with pytest.raises(
        TrackingError,
        match=r"MLflow tracking server http://127.0.0.1:9 is "
        r"unreachable",
    ):
        train(cfg)
    assert time.perf_counter() - t0 < 30
    assert not list((tmp_path / "run").glob("checkpoints/*.pt"))  # failed before training


def test_nan_stops_run_with_last_good_checkpoint(synth: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(
        tmp_path,
        synth,
        optim={"lr": 1e30},
        loss={"pool_size": 0},
        train={"steps": 20, "checkpoint_every": 1},
    )
    with pytest.raises(
        NonFiniteLossError, match="loss is not finite; .*last good checkpoint: .*step_0000000"
    ):
        train(cfg)
    ckpts = sorted((tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    assert ckpts, "the steps before the NaN were checkpointed"
    for w in net_weights(ckpts[-1]).values():
        assert torch.isfinite(w.float()).all()


def _train_cli(params: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cyclegan.cli", "train", "--params", str(params)],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigkill_then_resume_is_bit_identical(synth: Path, tmp_path: Path) -> None:
    common = {"steps": 16, "checkpoint_every": 2, "sample_every": 100, "log_every": 1}
    ref = write_params(
        tmp_path / "ref.yaml",
        tiny_params(tmp_path, synth, train={**common, "out_dir": str(tmp_path / "ref")}),
    )
    killed = write_params(
        tmp_path / "kill.yaml",
        tiny_params(tmp_path, synth, train={**common, "out_dir": str(tmp_path / "kill")}),
    )
    proc = _train_cli(ref, tmp_path)
    assert proc.wait(timeout=300) == 0, proc.stdout.read()

    proc = _train_cli(killed, tmp_path)
    log = tmp_path / "kill" / "train_log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 7:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted((tmp_path / "kill" / "checkpoints").glob("step_*.pt"))
    assert done and done[-1].name < "step_00000016.pt"

    proc = _train_cli(killed, tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    a = net_weights(tmp_path / "ref" / "checkpoints" / "last.pt")
    b = net_weights(tmp_path / "kill" / "checkpoints" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    # the resumed log continues where the checkpoint was, and ends at the same losses
    ref_log = (tmp_path / "ref" / "train_log.jsonl").read_text().splitlines()
    assert json.loads(log.read_text().splitlines()[-1])["G"] == json.loads(ref_log[-1])["G"]


def test_torn_latest_checkpoint_falls_back(synth: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, synth, train={"steps": 4, "checkpoint_every": 2})
    train(cfg)
    ckpt_dir = tmp_path / "run" / "checkpoints"
    newest = ckpt_dir / "step_00000004.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # torn write
    longer = config_from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "steps": 6}})
    result = train(longer)
    assert result.resumed_from == 2
    assert (ckpt_dir / "step_00000006.pt").is_file()


def test_changed_config_does_not_resume_and_keeps_old_checkpoints(
    synth: Path, tmp_path: Path
) -> None:
    first = tiny_cfg(tmp_path, synth, train={"steps": 3})
    other = tiny_cfg(tmp_path, synth, train={"steps": 3}, optim={"lr": 1e-4})
    train(first)
    result = train(other)
    assert result.resumed_from == 0
    stale = list((tmp_path / "run" / "checkpoints").glob("stale-*/step_00000003.pt"))
    assert len(stale) == 1
    # back and forth: the first config's second set must not land on its first set's files
    train(first)
    train(other)
    stale = list((tmp_path / "run" / "checkpoints").glob("stale-*/step_00000003.pt"))
    assert len(stale) == 3


def test_in_training_evaluation_picks_and_tags_best(synth: Path, tmp_path: Path) -> None:
    scores = iter([3.0, 1.0, 2.0])
    calls: list[int] = []

    def evaluator(g_ab: torch.nn.Module, g_ba: torch.nn.Module) -> dict[str, float]:
        calls.append(1)
        return {"score": next(scores)}

    cfg = tiny_cfg(tmp_path, synth, train={"steps": 6, "checkpoint_every": 2, "eval_every": 2})
    result = train(cfg, evaluator=evaluator)
    assert len(calls) == 3 and result.best_score == 1.0
    ckpt_dir = tmp_path / "run" / "checkpoints"
    assert (ckpt_dir / "best.pt").samefile(ckpt_dir / "step_00000004.pt")
    assert (ckpt_dir / "last.pt").samefile(ckpt_dir / "step_00000006.pt")
    state = torch.load(ckpt_dir / "best.pt", weights_only=True)
    assert state["metrics"]["best_step"] == 4
    assert [h["step"] for h in state["metrics"]["history"]] == [2, 4]


def test_default_evaluator_is_the_weight_free_quick_score(synth: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, synth, train={"steps": 2, "checkpoint_every": 2, "eval_every": 2})
    result = train(cfg)
    state = torch.load(result.best_checkpoint, weights_only=True)
    entry = state["metrics"]["history"][0]
    assert entry["score"] == pytest.approx(entry["l1_to_gt"]) and entry["l1_to_gt"] > 0


def test_explicit_bf16_and_channels_last_run(synth: Path, tmp_path: Path) -> None:
    from cyclegan.training.step import resolve_amp

    assert resolve_amp("fp16", torch.device("cpu")) == "fp16"  # explicit: no probe
    result = train(
        tiny_cfg(tmp_path, synth, train={"steps": 2, "amp": "bf16", "channels_last": True})
    )
    assert all(v == v for v in result.final_losses.values())  # finite, not NaN


def test_resume_false_moves_an_earlier_runs_checkpoints_aside(synth: Path, tmp_path: Path) -> None:
    # Left in place, the earlier run's step 4 would outrank the new run's step 2 in rotation
    # (deleting it before best.pt could link it) and in a later resume.
    train(tiny_cfg(tmp_path, synth, train={"steps": 4, "checkpoint_every": 2}))
    ckpt_dir = tmp_path / "run" / "checkpoints"
    old_last = (ckpt_dir / "last.pt").read_bytes()
    cfg = tiny_cfg(
        tmp_path, synth, train={"steps": 2, "checkpoint_every": 2, "keep_last": 1, "resume": False}
    )
    result = train(cfg)
    assert result.resumed_from == 0 and result.steps == 2
    assert sorted(p.name for p in ckpt_dir.glob("*.pt")) == [
        "best.pt",
        "last.pt",
        "step_00000002.pt",
    ]
    moved = list(ckpt_dir.glob("not-resumed-*"))
    assert len(moved) == 1
    assert sorted(p.name for p in moved[0].glob("*.pt")) == [
        "best.pt",
        "last.pt",
        "step_00000002.pt",
        "step_00000004.pt",
    ]
    assert (moved[0] / "last.pt").read_bytes() == old_last
    train(cfg)  # again within the same second: a second folder, nothing overwritten
    assert len(list(ckpt_dir.glob("not-resumed-*"))) == 2
