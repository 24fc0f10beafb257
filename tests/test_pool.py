"""Image history pool: fill-up, the 0.5 swap policy, determinism, bit-exact state round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cyclegan.training.checkpoint import load_checkpoint, save_checkpoint
from cyclegan.training.pool import ImagePool


def _batch(step: int, n: int = 2) -> torch.Tensor:
    """Image i of step s is filled with the value 100*s + i, so outputs can be traced back."""
    values = torch.tensor([100.0 * step + i for i in range(n)])
    return values.view(n, 1, 1, 1).expand(n, 3, 4, 4).clone()


def _ids(batch: torch.Tensor) -> list[int]:
    return [int(v) for v in batch[:, 0, 0, 0].tolist()]


def test_fills_up_returning_the_new_images() -> None:
    pool = ImagePool(pool_size=5, seed=0)
    out = [_ids(pool.query(_batch(s))) for s in range(2)]
    assert out == [[0, 1], [100, 101]]
    assert _ids(pool.query(_batch(2, n=3)))[0] == 200  # the 5th image still fills the pool
    assert len(pool) == 5


def test_full_pool_swaps_half_the_time() -> None:
    pool = ImagePool(pool_size=4, seed=3)
    pool.query(_batch(0, n=4))
    stored_before = {_ids(img[None])[0] for img in pool.images}
    returned_old = 0
    for step in range(1, 201):
        batch = _batch(step, n=2)
        out = pool.query(batch)
        assert out.shape == batch.shape and not out.requires_grad
        for new, got in zip(_ids(batch), _ids(out), strict=True):
            if got != new:
                returned_old += 1
                assert got < new  # an older image, taken from the pool
        assert len(pool) == 4
    assert 160 < returned_old < 240  # Binomial(400, 0.5): mean 200, sd 10
    assert not stored_before & {_ids(img[None])[0] for img in pool.images}  # all swapped out


def test_swapped_image_is_the_one_that_was_stored() -> None:
    pool = ImagePool(pool_size=1, seed=0)
    pool.query(_batch(0, n=1))
    history = [0]
    for step in range(1, 30):
        got = _ids(pool.query(_batch(step, n=1)))[0]
        if got != 100 * step:
            assert got == history[-1]  # pool_size 1: the only stored image comes back
            history.append(100 * step)
    assert len(history) > 5


def test_same_seed_same_outputs_other_seed_differs() -> None:
    def run(seed: int) -> list[list[int]]:
        pool = ImagePool(pool_size=3, seed=seed)
        return [_ids(pool.query(_batch(s))) for s in range(40)]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_state_round_trip_through_a_checkpoint_is_bit_exact(tmp_path: Path) -> None:
    pool = ImagePool(pool_size=3, seed=1)
    for s in range(10):
        pool.query(_batch(s) + torch.rand(2, 3, 4, 4))
    path = save_checkpoint(
        tmp_path / "c.pt", {"config": {}, "step": 10, "nets": {}, "pools": {"A": pool.state_dict()}}
    )
    resumed = ImagePool(pool_size=3, seed=999)
    resumed.load_state_dict(load_checkpoint(path)["pools"]["A"])
    for s in range(10, 40):
        x = _batch(s) + torch.rand(2, 3, 4, 4)
        assert torch.equal(pool.query(x), resumed.query(x))


def test_pass_through_and_bad_sizes() -> None:
    pool = ImagePool(pool_size=0)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = pool.query(x)
    assert torch.equal(out, x) and not out.requires_grad and len(pool) == 0
    with pytest.raises(ValueError, match="loss.pool_size: must be >= 0, got -1"):
        ImagePool(-1)
    with pytest.raises(ValueError, match="saved pool holds up to 0 images but loss.pool_size is 5"):
        ImagePool(5).load_state_dict(pool.state_dict())


def test_dtype_follows_the_query() -> None:
    pool = ImagePool(pool_size=1, seed=0)
    pool.query(torch.zeros(1, 3, 2, 2))
    outs = [pool.query(torch.ones(1, 3, 2, 2, dtype=torch.bfloat16)) for _ in range(10)]
    assert all(o.dtype == torch.bfloat16 for o in outs)
    assert any((o == 0).all() for o in outs)  # the float32 zero image came back as bf16
