"""Leftovers of killed runs (issue 12, item 16): the next run removes stale ones, and says so.

Real SIGKILLs in subprocesses produce the leftovers; live writers' items must survive.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from cyclegan.config import Config, DataConfig
from cyclegan.preprocess import preprocess
from cyclegan.training.checkpoint import save_checkpoint
from tests.data_factory import make_layout
from tests.train_utils import ROOT, cli_env


def _killed(code: str) -> None:
    env = {**cli_env(), "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


KILL = "os.kill(os.getpid(), signal.SIGKILL)"


def test_killed_checkpoint_write_leaves_a_temp_file_the_next_save_removes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpts = tmp_path / "checkpoints"
    target = ckpts / "step_00000004.pt"
    _killed(
        "import os, signal\nfrom cyclegan.storage import atomic_writer\n"
        f"with atomic_writer({str(target)!r}) as f:\n"
        f"    f.write(b'half a checkpoint'); f.flush(); {KILL}\n"
    )
    (torn,) = ckpts.iterdir()
    assert re.fullmatch(r"\.step_00000004\.pt\.\d+-[a-z0-9_]{8}\.tmp", torn.name), torn.name
    me = psutil.Process().create_time()
    live = ckpts / f".step_00000006.pt.{os.getpid()}-abcdefgh.tmp"  # a live writer: this process
    reused = ckpts / ".best.pt.1-abcdefgh.tmp"  # pid 1 lives, but started after this was written
    legacy_old = ckpts / ".step_00000002.pt.k3j4h5g6.tmp"  # pre-pid name, untouched since before
    legacy_new = ckpts / ".last.pt.zzzzzzzz.tmp"  # pre-pid name, touched while we run: kept
    other = ckpts / ".notes.backup12.tmp"  # not ours at all (not an extension we write)
    for p in (live, reused, legacy_old, legacy_new, other):
        p.write_bytes(b"x")
    os.utime(other, (me - 60, me - 60))
    boot = psutil.Process(1).create_time()
    os.utime(reused, (boot - 60, boot - 60))
    os.utime(legacy_old, (me - 60, me - 60))
    with caplog.at_level(logging.WARNING, logger="cyclegan.storage"):
        save_checkpoint(ckpts / "step_00000008.pt", {"config": {}, "step": 8, "nets": {}})
    assert sorted(p.name for p in ckpts.iterdir()) == sorted(
        [live.name, legacy_new.name, other.name, "step_00000008.pt"]
    )
    removed = ", ".join(sorted([torn.name, reused.name, legacy_old.name]))
    assert caplog.messages == [
        f"removed 3 stale temporary item(s) that killed runs left in {ckpts}: {removed}"
    ]


def test_killed_preprocess_leaves_a_staging_folder_the_next_run_removes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw, out = make_layout(tmp_path / "raw"), tmp_path / "processed"
    _killed(
        "import os, signal\nfrom cyclegan.data.io import staged_dir\n"
        f"with staged_dir({str(out)!r}) as stage:\n"
        f"    (stage / 'trainA').mkdir(); {KILL}\n"
    )
    (stale,) = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert re.fullmatch(r"\.processed\.staging-\d+-[a-z0-9_]{8}", stale.name), stale.name
    cfg = Config(data=DataConfig(raw_dir=str(raw), processed_dir=str(out)))
    with caplog.at_level(logging.WARNING, logger="cyclegan.storage"):
        preprocess(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["processed", "raw"]
    assert caplog.messages == [
        f"removed 1 stale temporary item(s) that killed runs left in {tmp_path}: {stale.name}"
    ]
