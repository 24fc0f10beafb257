"""cyclegan.training.report: loss curves from train_log.jsonl, no warning for unlogged terms."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from PIL import Image

from cyclegan.training.report import write_outputs


def test_curves_without_identity_losses_plot_cleanly(tmp_path: Path) -> None:
    rows = [{"step": s, "G": 5.0 - s / 100, "D": 0.5, "cycle_A": 2.0, "cycle_B": 1.5,
             "D_A": 0.3, "D_B": 0.2} for s in (20, 40, 60)]  # fmt: skip
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels" included
        paths = write_outputs(tmp_path)
    with Image.open(paths["png"]) as im:
        assert im.width > 4 * im.height  # one panel per curve group, side by side
    assert paths["csv"].read_text().splitlines()[0].startswith("step")
