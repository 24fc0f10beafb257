"""cyclegan.data.dataset: unpaired sampling, bad-file skipping, resumable B draws."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from cyclegan.config import TransformConfig
from cyclegan.data.dataset import SingleDomainDataset, UnpairedDataset
from cyclegan.data.errors import DataError
from cyclegan.data.io import load_image
from cyclegan.data.transforms import eval_transform, to_tensor, train_transform
from tests.data_factory import make_layout, make_messy_dataset


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    return make_layout(tmp_path / "ds", {"trainA": 5, "trainB": 3, "testA": 2, "testB": 4})


def test_items_shapes_ranges_and_sizes(layout: Path) -> None:
    tf = train_transform(TransformConfig(load_size=36, crop_size=32))
    ds = UnpairedDataset(layout, "train", tf)
    assert len(ds) == 5  # max(|A|, |B|), as in the reference
    item = ds[3]
    assert item["A"].shape == item["B"].shape == (3, 32, 32)
    assert item["A"].dtype == torch.float32
    assert item["A"].min() >= -1 and item["A"].max() <= 1
    assert item["A_path"] == str(layout / "trainA" / "003.png")
    assert Path(item["B_path"]).parent == layout / "trainB"
    test = UnpairedDataset(layout, "test")
    assert len(test) == 4
    assert [Path(test[i]["A_path"]).name for i in range(4)] == ["000.png", "001.png"] * 2
    assert [Path(test[i]["B_path"]).name for i in range(4)] == [f"{i:03d}.png" for i in range(4)]
    a = test[1]["A"]
    assert torch.equal(a, to_tensor(load_image(layout / "testA" / "001.png")))


def test_b_is_drawn_independently_and_reproducibly(layout: Path) -> None:
    ds = UnpairedDataset(layout, "train", seed=123)
    draws = [ds.b_index(i) for i in range(600)]
    counts = Counter(draws)
    assert set(counts) == {0, 1, 2}
    assert all(150 < c < 250 for c in counts.values())  # ~uniform over the 3 B files
    same_a = [ds.b_index(0 + 5 * k) for k in range(60)]  # A index 0 at every later "lap"
    assert len(set(same_a)) == 3  # A is not tied to one B partner
    again = UnpairedDataset(layout, "train", seed=123)
    assert [again.b_index(i) for i in range(600)] == draws
    other = UnpairedDataset(layout, "train", seed=124)
    assert [other.b_index(i) for i in range(600)] != draws
    ds.set_epoch(1)
    assert [ds.b_index(i) for i in range(600)] != draws


def test_state_dict_resume_and_generator_argument(layout: Path) -> None:
    ds = UnpairedDataset(layout, "train", seed=5)
    ds.set_epoch(3)
    expected = [ds[i]["B_path"] for i in range(10)]
    resumed = UnpairedDataset(layout, "train", seed=999)
    resumed.load_state_dict(ds.state_dict())
    assert ds.state_dict() == {"seed": 5, "epoch": 3}
    assert [resumed[i]["B_path"] for i in range(10)] == expected
    g1, g2 = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    d1 = UnpairedDataset(layout, "train", generator=g1)
    d2 = UnpairedDataset(layout, "train", generator=g2)
    assert d1.seed == d2.seed
    assert [d1.b_index(i) for i in range(50)] == [d2.b_index(i) for i in range(50)]


def test_same_pairs_with_and_without_workers(layout: Path) -> None:
    ds = UnpairedDataset(layout, "train", eval_transform(32), seed=3)

    def pairs(workers: int) -> list[tuple[str, str]]:
        loader = DataLoader(ds, batch_size=2, shuffle=False, num_workers=workers)
        return [pair for b in loader for pair in zip(b["A_path"], b["B_path"], strict=True)]

    assert pairs(2) == pairs(0)


def test_corrupt_files_are_skipped_never_loaded(tmp_path: Path) -> None:
    expected = make_messy_dataset(tmp_path / "messy")
    ds = UnpairedDataset(
        tmp_path / "messy", "train", eval_transform(32), min_size=16, max_pixels=89_478_485
    )
    assert [p.name for p in ds.A] == expected["good"]["trainA"]
    assert [p.name for p in ds.B] == expected["good"]["trainB"]
    skipped = {f"{p.parent.name}/{p.name}" for p, _ in ds.skipped}
    assert skipped == set(expected["skipped"]) - {"trainA/notes.txt"}  # .txt is not listed
    for i in range(len(ds)):
        item = ds[i]
        assert item["A"].shape == (3, 32, 32) and torch.isfinite(item["A"]).all()


def test_below_minimum_and_missing_folders(tmp_path: Path, layout: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"trainB: 3 usable images, need at least 4 \(0 skipped; run `cyclegan data "
        r"validate` on the dataset for details\)",
    ):
        UnpairedDataset(layout, "train", min_images=4)
    with pytest.raises(DataError, match=r"dataset root not found: .*nowhere \(expected trainA/"):
        UnpairedDataset(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"split must be 'train' or 'test', got 'val'"):
        UnpairedDataset(layout, "val")
    (layout / "testB").rename(layout / "testB_moved")
    with pytest.raises(DataError, match=r"image folder not found: .*testB \(expected a directory"):
        UnpairedDataset(layout, "test")


def test_single_domain_dataset(tmp_path: Path) -> None:
    make_messy_dataset(tmp_path / "m")
    ds = SingleDomainDataset(tmp_path / "m" / "testA", eval_transform(16))
    assert len(ds) == 2
    assert ds[0]["image"].shape == (3, 16, 16)
    assert ds[1]["path"] == str(tmp_path / "m" / "testA" / "t0.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: 0 usable images, need at least 1"):
        SingleDomainDataset(tmp_path / "empty")


def test_real_photos_load(sunflower: Path) -> None:
    ds = UnpairedDataset(sunflower, "test", eval_transform(64))
    assert (len(ds.A), len(ds.B), ds.skipped) == (90, 85, [])
    batch = next(iter(DataLoader(ds, batch_size=8)))
    assert batch["A"].shape == (8, 3, 64, 64) and batch["B"].shape == (8, 3, 64, 64)
    assert -1 <= batch["A"].min() < 0 < batch["A"].max() <= 1
