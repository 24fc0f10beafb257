"""Progressive resizing (``train.progressive``): validated schedule, sizes a pure function of the
step (so ranks and resumed runs agree), and a resume across a size change that is bit-exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cyclegan.config import Config, ConfigError
from cyclegan.train import train
from cyclegan.training.distributed import DistInfo
from cyclegan.training.loader import Stage, domain_loader, progressive_stages
from tests.train_utils import make_synth, net_weights, tiny_cfg

SCHEDULE = [[0.0, 24], [0.5, 32]]  # 24 px for the first half of train.steps, then 32 px


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth"), train=8, test=3)


def test_schedule_is_validated_with_the_dotted_key(synth: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, synth, train={"steps": 8, "progressive": SCHEDULE})
    # load 36 / crop 32: a 24 px stage resizes to 27 and crops 24 (same field of view)
    assert progressive_stages(cfg) == [Stage(0, 27, 24), Stage(4, 36, 32)]
    assert progressive_stages(tiny_cfg(tmp_path, synth)) == [Stage(0, 36, 32)]
    bad = tiny_cfg(tmp_path, synth, train={"progressive": [[0.0, 26], [0.5, 32]]})
    msg = (
        "train.progressive[0][1]: must be a multiple of 4 (the resnet_6blocks generator's "
        "size multiple), got 26"
    )
    with pytest.raises(ConfigError) as e:
        train(bad)
    assert str(e.value) == msg
    assert not (tmp_path / "run").exists()  # refused before anything was created
    small = tiny_cfg(tmp_path, synth, train={"progressive": [[0.0, 16], [0.5, 32]]})
    with pytest.raises(ConfigError) as e:
        progressive_stages(small)
    assert str(e.value) == (
        "train.progressive[0][1]: must be >= 24 px (the smallest input of the patchgan "
        "discriminator with these settings), got 16"
    )
    with pytest.raises(ConfigError, match=r"^train.progressive\[1\]\[1\]: the last stage must "):
        tiny_cfg(tmp_path, synth, train={"progressive": [[0.0, 16], [0.5, 24]]})


def _batches(cfg: Config, rank: int, world: int, start: int, n: int) -> list[torch.Tensor]:
    info = DistInfo(rank, rank, world, torch.device("cpu"))
    it = domain_loader(cfg, info, "train", "A", start)
    return [next(it) for _ in range(n)]


def test_crop_size_is_a_pure_function_of_the_step(synth: Path, tmp_path: Path) -> None:
    one = tiny_cfg(tmp_path, synth, train={"steps": 8, "batch_size": 2, "progressive": SCHEDULE})
    two = tiny_cfg(tmp_path, synth, train={"steps": 8, "batch_size": 1, "progressive": SCHEDULE})
    single = _batches(one, 0, 1, 0, 8)
    assert [tuple(b.shape) for b in single] == [(2, 3, 24, 24)] * 4 + [(2, 3, 32, 32)] * 4
    # resumed at step 3 (before the change): the same tensors as the uninterrupted stream
    for a, b in zip(single[3:], _batches(one, 0, 1, 3, 5), strict=True):
        assert torch.equal(a, b)
    # two DDP ranks with batch 1: their union at each step is the single process's batch
    r0, r1 = _batches(two, 0, 2, 0, 8), _batches(two, 1, 2, 0, 8)
    for s, (a, b) in enumerate(zip(r0, r1, strict=True)):
        assert torch.equal(torch.cat([a, b]), single[s]), f"step {s}"


def test_resume_across_the_size_change_is_bit_identical(synth: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(
        tmp_path,
        synth,
        train={"steps": 8, "checkpoint_every": 2, "sample_every": 100, "progressive": SCHEDULE},
    )
    ref = train(cfg)
    ckpts = tmp_path / "run" / "checkpoints"
    expected = net_weights(ckpts / "last.pt")
    # as if stopped after step 2 (24 px): only the step-2 checkpoint survives
    for p in ckpts.iterdir():
        if p.name != "step_00000002.pt":
            p.unlink()
    res = train(cfg)
    assert res.resumed_from == 2
    got = net_weights(res.last_checkpoint)
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), f"{k} differs after resuming across 24 -> 32 px"
    assert res.final_losses == ref.final_losses
