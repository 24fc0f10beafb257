"""cyclegan.data.validate: the report lists exactly the planted problems; broken layouts fail."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from cyclegan.cli import main
from cyclegan.config import DataConfig
from cyclegan.data.errors import DataError
from cyclegan.data.validate import validate_dataset
from tests.data_factory import make_layout, make_messy_dataset


def test_messy_dataset_report_is_exact(tmp_path: Path) -> None:
    expected = make_messy_dataset(tmp_path / "messy")
    report = validate_dataset(tmp_path / "messy", DataConfig(min_image_size=16), progress=False)
    assert report.ok
    assert report.counts == expected["counts"]
    skipped = {s["path"]: s["reason"] for s in report.skipped}
    assert set(skipped) == set(expected["skipped"])
    for path, pattern in expected["skipped"].items():
        assert re.fullmatch(pattern, skipped[path]), (path, skipped[path])
    assert report.duplicates_within == expected["duplicates_within"]
    assert report.duplicates_across == expected["duplicates_across"]
    assert report.modes["trainA"] == {"CMYK": 1, "I;16": 1, "L": 1, "P": 1, "RGB": 5, "RGBA": 1}
    assert report.sizes["trainA"] == {"32x32": 9, "32x48": 1}  # the EXIF-rotated JPEG
    assert report.imbalance == {"train": round(10 / 7, 4), "test": 1.0}
    assert report.warnings == [
        "2 identical file pairs across splits (train/test leakage?)",
        "1 groups of identical files within a split",
    ]
    good = {f"{c.split}/{c.name}" for c in report.checks if c.reason is None}
    assert good == {f"{s}/{n}" for s, names in expected["good"].items() for n in names}


def test_json_and_summary(tmp_path: Path) -> None:
    make_messy_dataset(tmp_path / "messy")
    report = validate_dataset(tmp_path / "messy", progress=False)
    path = report.write_json(tmp_path / "out" / "report.json")
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is True and data["counts"]["trainB"] == 7
    text = report.summary()
    assert text.splitlines()[0] == f"dataset {tmp_path / 'messy'}: OK"
    assert "skipped trainA/empty.png: empty file (0 bytes)" in text
    assert "duplicate across splits: testA/leak.png = trainA/good 1.png" in text


def test_missing_and_empty_splits_are_errors(tmp_path: Path) -> None:
    root = make_layout(tmp_path / "ds", {"trainA": 2, "trainB": 2, "testA": 1, "testB": 0})
    shutil.rmtree(root / "trainB")
    report = validate_dataset(root, progress=False)
    assert not report.ok
    assert report.errors == [
        f"missing split folder trainB/ (expected {root / 'trainB'})",
        "testB/ has no usable images",
    ]
    assert "error: testB/ has no usable images" in report.summary()


def test_below_minimum_and_imbalance(tmp_path: Path) -> None:
    root = make_layout(tmp_path / "ds", {"trainA": 5, "trainB": 2, "testA": 1, "testB": 1})
    report = validate_dataset(root, DataConfig(min_train=3, min_test=1), progress=False)
    assert report.errors == ["trainB/ has 2 usable images, below the minimum 3 (data.min_train)"]
    assert report.imbalance["train"] == 2.5
    assert "train domains are imbalanced: 5 A vs 2 B images" in report.warnings
    report = validate_dataset(root, DataConfig(min_train=2, min_test=2), progress=False)
    assert report.errors == [
        "testA/ has 1 usable images, below the minimum 2 (data.min_test)",
        "testB/ has 1 usable images, below the minimum 2 (data.min_test)",
    ]


def test_gt_splits_are_validated_when_present(tmp_path: Path) -> None:
    root = make_layout(tmp_path / "ds", {"trainA": 1, "trainB": 1, "testA": 2, "testB": 1})
    make_layout(root, {"testA_gt": 2}, seed=7)
    (root / "testA_gt" / "001.png").write_bytes(b"")
    report = validate_dataset(root, progress=False)
    assert report.counts["testA_gt"] == 1 and "testB_gt" not in report.counts
    assert report.skipped == [{"path": "testA_gt/001.png", "reason": "empty file (0 bytes)"}]


def test_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"dataset folder not found: .*nope \(expected trainA/ trainB/ testA/"
    ):
        validate_dataset(tmp_path / "nope")


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = make_layout(tmp_path / "good")
    assert main(["data", "validate", str(good), "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["counts"]["trainA"] == 3
    assert ": OK" in capsys.readouterr().out
    shutil.rmtree(good / "testA")
    assert main(["data", "validate", str(good)]) == 1
    assert "error: missing split folder testA/" in capsys.readouterr().out
    assert main(["data", "validate", str(good), "--set", "data.min_train=4"]) == 1
    assert main(["data", "validate", str(tmp_path / "absent")]) == 2
    assert "error: dataset folder not found" in capsys.readouterr().err


def test_real_photos_validate(sunflower: Path) -> None:
    report = validate_dataset(sunflower, progress=False)
    assert report.ok, report.errors
    assert report.counts == {"trainA": 500, "trainB": 500, "testA": 90, "testB": 85}
    assert report.skipped == []
    assert report.duplicates_across == []
    assert report.sizes["trainA"] == {"256x256": 500}
    assert any(c.name.startswith("#") for c in report.checks)  # names with '#' load
