"""Training refuses bad inputs up front and leaves nothing behind (issue 12: 11-13, 17, 20)."""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cyclegan.data.errors import DataError
from cyclegan.data.trainset import check_train_data
from cyclegan.train import train
from cyclegan.training.monitor import progress_bar, show_progress
from cyclegan.training.step import NonFiniteLossError
from tests.train_utils import cli_env, make_synth, tiny_cfg

HINT = (
    "run `cyclegan preprocess` (or `dvc repro preprocess`) first, or point data.processed_dir "
    "at a dataset with trainA/ trainB/"
)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth"), train=6, test=2)


def test_missing_data_fails_before_tracking_and_folders(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, tmp_path / "nope", tracking={"enabled": True})
    with pytest.raises(DataError) as e:
        train(cfg)
    assert (
        str(e.value) == f"training data {tmp_path / 'nope'} not found (data.processed_dir): {HINT}"
    )
    assert not (tmp_path / "mlflow.db").exists(), "no MLflow run may be started"
    assert not (tmp_path / "run").exists(), "no run folder (no empty checkpoints/)"
    (tmp_path / "half" / "trainA").mkdir(parents=True)
    with pytest.raises(DataError, match=r"half has no trainB/ folder: run `cyclegan preprocess`"):
        train(tiny_cfg(tmp_path, tmp_path / "half"))


def test_unpreprocessed_folder_is_checked_up_front_and_corrupt_images_skipped(
    synth: Path, tmp_path: Path
) -> None:
    data = shutil.copytree(synth, tmp_path / "data")  # synth output: no manifest.json
    (data / "trainA" / "zz_torn.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    cfg = tiny_cfg(tmp_path, data, train={"steps": 2, "checkpoint_every": 2})
    checked = check_train_data(cfg)
    assert checked.checked and [p.name for p, _ in checked.skipped] == ["zz_torn.png"]
    assert len(checked.paths["A"]) == 6 and len(checked.paths["B"]) == 6
    result = train(cfg)  # the torn file would be drawn within 2 steps of batch 2 otherwise
    assert result.warnings[0].startswith(
        f"skipped 1 unreadable training image(s) in {data} (not a `cyclegan preprocess` "
        f"output): {data / 'trainA' / 'zz_torn.png'}: "
    )
    # a manifest from preprocess vouches for its files: no decoding up front
    files = {f"train{d}/{p.name}": {} for d in "AB" for p in checked.paths[d]}
    (data / "manifest.json").write_text(json.dumps({"files": files}))
    (data / "trainA" / "zz_torn.png").unlink()
    trusted = check_train_data(cfg)
    assert not trusted.checked and not trusted.skipped
    # nothing usable left: a clear error, before any training
    (data / "manifest.json").unlink()
    for p in (data / "trainB").iterdir():
        p.write_bytes(b"not an image")
    with pytest.raises(DataError) as e:
        check_train_data(cfg)
    assert str(e.value) == (
        f"{data / 'trainB'}: 0 usable image(s), data.min_train is 1 (6 unreadable): {HINT}"
    )


def test_lowering_steps_below_a_finished_run_trains_nothing_and_says_so(
    synth: Path, tmp_path: Path
) -> None:
    train(tiny_cfg(tmp_path, synth, train={"steps": 4, "checkpoint_every": 2}))
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    before = last.stat().st_mtime_ns
    last.unlink()  # as `dvc repro` may have done: relinked to the step file, not retrained
    res = train(tiny_cfg(tmp_path, synth, train={"steps": 2, "checkpoint_every": 2}))
    assert res.nothing_trained == (
        f"nothing trained: the run in {tmp_path / 'run'} is already at step 4, past "
        "train.steps=2 (a resumed run cannot go back); its checkpoints are unchanged. "
        "For a 2-step model, set another train.out_dir"
    )
    assert res.summary().splitlines() == [
        res.nothing_trained,
        f"last checkpoint: {last} (unchanged)",
    ]
    assert "images/s" not in res.summary() and last.stat().st_mtime_ns == before
    again = train(tiny_cfg(tmp_path, synth, train={"steps": 4, "checkpoint_every": 2}))
    assert again.nothing_trained == (
        f"nothing trained: the run in {tmp_path / 'run'} already finished train.steps=4; "
        "raise train.steps to train further"
    )


def test_failed_train_leaves_no_empty_checkpoints_folder(synth: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(
        tmp_path,
        synth,
        optim={"lr": 1e30},
        loss={"pool_size": 0},
        train={"steps": 30, "checkpoint_every": 100, "log_every": 100, "sample_every": 100},
    )
    with pytest.raises(NonFiniteLossError, match="last good checkpoint: None"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_progress_bar_in_logs_draws_on_a_timer_not_per_postfix() -> None:
    buf = io.StringIO()  # not a TTY, like CI or `dvc repro > log`
    bar = progress_bar(range(500), file=buf, desc="train")
    for i in bar:
        show_progress(bar, G=f"{i:.3f}", D="0.5", ips="99.0")
    bar.close()
    frames = [f for f in buf.getvalue().split("\r") if f.strip()]
    assert 1 <= len(frames) <= 3, frames  # first draw + final draw (+1 if a 10 s tick came)
    assert "500/500" in frames[-1] and "G=499.000" in frames[-1]


def test_torn_checkpoint_is_reported_once_by_its_module_logger(
    synth: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train(tiny_cfg(tmp_path, synth, train={"steps": 4, "checkpoint_every": 2}))
    newest = tmp_path / "run" / "checkpoints" / "step_00000004.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING):
        res = train(tiny_cfg(tmp_path, synth, train={"steps": 5, "checkpoint_every": 5}))
    torn = [r for r in caplog.records if "skipping unreadable checkpoint" in r.getMessage()]
    assert [r.name for r in torn] == ["cyclegan.training.checkpoint"]
    assert res.resumed_from == 2


def test_cli_refuses_missing_data_before_importing_torch(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom cyclegan.cli import main\n"
        "rc = main(['train', '--set', 'data.processed_dir=nowhere'])\n"
        "assert 'torch' not in sys.modules, 'the data check must not wait for torch'\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=cli_env(), capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"error: training data nowhere not found (data.processed_dir): {HINT}\n"
    assert list(tmp_path.iterdir()) == []  # no run folder, no mlflow.db
