"""The evaluate step end to end: real checkpoints, real files, real MLflow sqlite store, CLI."""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from cyclegan.config import Config, config_from_dict
from cyclegan.evaluate import evaluate
from cyclegan.evaluation.errors import EvalError
from cyclegan.evaluation.weights import WeightsError
from cyclegan.models import build_generator
from cyclegan.training.checkpoint import load_generators, save_checkpoint

SIZE = 32


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty private torch hub cache (no real weights leak in) and one torch thread."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path / "torch" / "hub"
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic data with ground truth + a run folder with step checkpoints and best.pt."""
    from cyclegan.data.synth import synthesize

    root = tmp_path_factory.mktemp("bench")
    synthesize(root / "data", train=12, test=6, size=SIZE, seed=0, progress=False)
    cfg = _cfg(root)
    for step in (3, 6):
        torch.manual_seed(step)
        nets = {n: build_generator(cfg.model).state_dict() for n in ("G_AB", "G_BA")}
        save_checkpoint(
            root / "run" / "checkpoints" / f"step_{step:08d}.pt",
            {"config": cfg.to_dict(), "step": step, "nets": nets},
        )
    shutil.copy(root / "run/checkpoints/step_00000006.pt", root / "run/checkpoints/best.pt")
    return root


def _raw(root: Path, **evaluate_keys: Any) -> dict[str, Any]:
    return {
        "data": {"processed_dir": str(root / "data")},
        "transforms": {"load_size": SIZE, "crop_size": SIZE},
        "model": {"ngf": 8, "ndf": 8},
        "train": {"out_dir": str(root / "run"), "device": "cpu", "threads": 1},
        "tracking": {"enabled": False, "uri": f"sqlite:///{root / 'mlflow.db'}"},
        "evaluate": {
            "out_dir": str(root / "metrics"),
            "report_dir": str(root / "report"),
            "classifier_steps": 20,
            "bootstrap": 200,
            "download": False,
            "lpips_net": "squeeze",
            **evaluate_keys,
        },
    }


def _cfg(root: Path, tracking: bool = False, **evaluate_keys: Any) -> Config:
    raw = _raw(root, **evaluate_keys)
    raw["tracking"]["enabled"] = tracking
    return config_from_dict(raw)


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _hand_l1(bench: Path, ckpt: Path) -> tuple[float, float]:
    """Model and identity L1 to ground truth for A->B, computed with numpy from the files."""
    _, g_ab, _ = load_generators(ckpt)
    model, ident = [], []
    for p in sorted((bench / "data" / "testA").glob("*.png")):
        x, gt = _pixels(p), _pixels(bench / "data" / "testA_gt" / p.name)
        inp = torch.from_numpy(x * 2 - 1).permute(2, 0, 1)[None].float()
        with torch.no_grad():
            y = (g_ab(inp)[0].permute(1, 2, 0).double().numpy() + 1) / 2
        model.append(np.abs(y - gt).mean())
        ident.append(np.abs(x - gt).mean())
    return float(np.mean(model)), float(np.mean(ident))


def test_step_outputs_numbers_and_mlflow(
    bench: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import mlflow

    cfg = _cfg(
        bench, tracking=True, out_dir=str(tmp_path / "metrics"), report_dir=str(tmp_path / "report")
    )
    mlflow.set_tracking_uri(cfg.tracking.uri)
    mlflow.set_experiment(cfg.tracking.experiment)
    with mlflow.start_run() as train_run:  # what `cyclegan train` leaves behind
        pass
    (bench / "run" / "mlflow_run_id.txt").write_text(train_run.info.run_id)

    res = evaluate(cfg)

    assert res.model == str(bench / "run/checkpoints/best.pt")
    metrics = json.loads((tmp_path / "metrics" / "eval.json").read_text())
    model_l1, ident_l1 = _hand_l1(bench, bench / "run/checkpoints/best.pt")
    ab = metrics["AtoB"]
    # The evaluator runs the same fp32 generator in batches, the hand version one image at a
    # time: outputs in [-1, 1] differ by kernel rounding only (~1e-6 on any x86 CPU; no
    # optimiser step amplifies it), so an L1 in [0, 1] agrees to 1e-5 absolute.
    assert ab["l1_to_gt"]["mean"] == pytest.approx(model_l1, abs=1e-5)
    assert ab["identity_l1_to_gt"]["mean"] == pytest.approx(ident_l1, abs=1e-6)
    assert ab["l1_to_gt_gain"]["mean"] == pytest.approx(ident_l1 - model_l1, abs=1e-5)
    mean_b = np.mean([_pixels(p) for p in sorted((bench / "data/trainB").glob("*.png"))], axis=0)
    mean_l1 = np.mean(
        [
            np.abs(mean_b - _pixels(p)).mean()
            for p in sorted((bench / "data/testA_gt").glob("*.png"))
        ]
    )
    assert ab["mean_target_l1_to_gt"]["mean"] == pytest.approx(mean_l1, abs=1e-6)
    assert ab["l1_to_gt_gain_vs_mean"]["mean"] == pytest.approx(mean_l1 - model_l1, abs=1e-5)
    for key in ("l1_to_gt", "psnr_to_gt", "ssim_to_gt", "cycle_l1", "domain_acc"):
        est = ab[key]
        assert est["lo"] <= est["mean"] <= est["hi"] and est["n"] == 6
    assert metrics["classifier"]["test_acc"]["n"] == 12
    assert metrics["n_images"] == {"testA": 6, "testB": 6}
    assert metrics["fid_available"] == 0 and metrics["lpips_available"] == 0

    # skipped weight-based metrics: recorded and printed with the full message
    err = capsys.readouterr().err
    skipped = (
        "FID/KID skipped (evaluate.require_weights=false): FID/KID Inception-v3 weights "
        "(TF 2015-12-05 port) not found"
    )
    assert any(n.startswith(skipped) for n in res.notes)
    assert "Supply it in one of three ways" in err and "LPIPS skipped" in err

    rows = _csv(tmp_path / "metrics" / "eval_per_image.csv")
    assert len(rows) == 12 and {r["direction"] for r in rows} == {"AtoB", "BtoA"}
    csv_mean = np.mean([float(r["l1_to_gt"]) for r in rows if r["direction"] == "AtoB"])
    assert csv_mean == pytest.approx(ab["l1_to_gt"]["mean"], abs=1e-5)

    curve = _csv(tmp_path / "metrics" / "eval_curve.csv")
    assert [int(r["step"]) for r in curve] == [3, 6]
    assert float(curve[1]["l1_to_gt_AtoB"]) == pytest.approx(ab["l1_to_gt"]["mean"], abs=1e-5)

    png = Image.open(tmp_path / "report" / "eval_samples.png")
    assert png.width == 4 * (3 * SIZE + 2)  # input, translation, reconstruction, ground truth
    html = (tmp_path / "report" / "eval_report.html").read_text()
    assert f"{ab['l1_to_gt']['mean']:.4f}" in html and "data:image/png;base64," in html

    # MLflow: the training run gets the same numbers, the curve and every file
    assert res.mlflow_run_id == train_run.info.run_id
    run = mlflow.get_run(train_run.info.run_id)
    assert run.data.metrics["eval.AtoB.l1_to_gt.mean"] == pytest.approx(ab["l1_to_gt"]["mean"])
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "eval_curve.l1_to_gt")
    assert sorted(m.step for m in history) == [3, 6]
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "eval")}
    assert {"eval/eval.json", "eval/eval_per_image.csv", "eval/eval_curve.csv"} <= names
    report = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "eval/report")}
    assert report == {"eval/report/eval_samples.png", "eval/report/eval_report.html"}
    (bench / "run" / "mlflow_run_id.txt").unlink()


def test_required_weights_fail_fast_and_cli_exit_code(
    bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from cyclegan.cli import main

    with pytest.raises(WeightsError, match=r"^FID/KID Inception-v3 weights .* not found"):
        evaluate(_cfg(bench, require_weights=True, lpips=False))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_raw(bench, lpips=False)))
    assert main(["evaluate", "--params", str(params), "--require-weights"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: FID/KID Inception-v3 weights (TF 2015-12-05 port) not found")
    assert "evaluate.inception_weights" in err


def test_bad_model_and_data_paths(bench: Path, tmp_path: Path) -> None:
    raw = _raw(bench)
    raw["train"]["out_dir"] = str(tmp_path / "empty_run")
    cfg = config_from_dict(raw)
    with pytest.raises(EvalError) as e:
        evaluate(cfg)
    assert str(e.value) == (
        f"no checkpoint to evaluate: neither {tmp_path}/empty_run/checkpoints/best.pt nor "
        f"{tmp_path}/empty_run/checkpoints/last.pt exists. Run `cyclegan train` first or pass "
        "--model (a .pt checkpoint or an ONNX folder)"
    )
    best = bench / "run/checkpoints/best.pt"
    with pytest.raises(EvalError, match=r"--model .*nope.pt: not found"):
        evaluate(cfg, model=tmp_path / "nope.pt")
    (tmp_path / "d" / "testA").mkdir(parents=True)
    with pytest.raises(EvalError, match=r"d/testB not found: --data must be a dataset root"):
        evaluate(cfg, model=best, data=tmp_path / "d")
    (tmp_path / "onnx").mkdir()
    with pytest.raises(EvalError, match=r"generator_AtoB.onnx: ONNX model not found"):
        evaluate(cfg, model=tmp_path / "onnx", data=bench / "data")
    gt = tmp_path / "gt"
    shutil.copytree(bench / "data", gt)
    next((gt / "testA_gt").glob("*.png")).unlink()
    with pytest.raises(EvalError, match=r"testA_gt lacks 1 of 6 testA files"):
        evaluate(cfg, model=best, data=gt)


@pytest.mark.slow
def test_fid_kid_lpips_end_to_end_with_local_weights(bench: Path, tmp_path: Path) -> None:
    from cyclegan.storage import sha256_file
    from tests.eval_support import write_backbone, write_inception

    inception = write_inception(tmp_path / "inception.pth")
    write_backbone("squeeze", tmp_path / "torch/hub/checkpoints/squeezenet1_1-b8a52dc0.pth")
    cfg = _cfg(
        bench,
        inception_weights=str(inception),
        max_images=3,
        curve=False,
        require_weights=True,
        out_dir=str(tmp_path / "m"),
        report_dir=str(tmp_path / "r"),
    )
    res = evaluate(cfg)
    ab = res.metrics["AtoB"]
    assert math.isfinite(ab["fid"]["value"]) and ab["fid"]["value"] > 0
    assert (ab["kid"]["n_real"], ab["kid"]["n_fake"], ab["kid"]["subset_size"]) == (3, 3, 3)
    ba = res.metrics["BtoA"]
    assert ab["identity_fid"]["value"] == pytest.approx(ba["identity_fid"]["value"])  # symmetric
    assert ab["lpips_content"]["n"] == 3 and ab["lpips_to_gt"]["mean"] > 0
    proto = res.protocol["fid_kid"]["AtoB"]
    assert proto["weights_sha256"] == sha256_file(inception) and not proto["weights_official"]
    assert proto["n_real"] == 3 and proto["resize"].startswith("299x299 bilinear")
    assert any("below 2048 images" in n for n in res.notes)
    assert res.metrics["fid_available"] == 1 and res.metrics["lpips_available"] == 1


@pytest.mark.slow
def test_onnx_export_scores_like_the_checkpoint(bench: Path, tmp_path: Path) -> None:
    from cyclegan.export import export_onnx

    best = bench / "run/checkpoints/best.pt"
    _, g_ab, g_ba = load_generators(best)
    (tmp_path / "onnx").mkdir()
    for name, g in (("AtoB", g_ab), ("BtoA", g_ba)):
        export_onnx(g, tmp_path / "onnx" / f"generator_{name}.onnx", 18, {"direction": name})
    cfg = _cfg(bench, curve=False, out_dir=str(tmp_path / "m"), report_dir=str(tmp_path / "r"))
    onnx = evaluate(cfg, model=tmp_path / "onnx")
    torch_res = evaluate(cfg, model=best)
    assert onnx.protocol["model_kind"] == "onnx"
    for d in ("AtoB", "BtoA"):
        for key in ("l1_to_gt", "cycle_l1"):
            assert onnx.metrics[d][key]["mean"] == pytest.approx(
                torch_res.metrics[d][key]["mean"], abs=1e-4
            )


def test_real_dataset_weight_free_and_classifier(
    bench: Path, sunflower: Path, tmp_path: Path
) -> None:
    cfg = _cfg(
        bench,
        max_images=10,
        classifier_steps=60,
        curve=False,
        fid=False,
        lpips=False,
        out_dir=str(tmp_path / "m"),
        report_dir=str(tmp_path / "r"),
    )
    res = evaluate(cfg, model=bench / "run/checkpoints/best.pt", data=sunflower)
    ab = res.metrics["AtoB"]
    assert "l1_to_gt" not in ab  # no ground truth on real data
    assert ab["cycle_l1"]["n"] == 10 and ab["domain_acc"]["n"] == 10
    clf = res.metrics["classifier"]
    assert clf["test_acc"]["n"] == 20 and 0.0 <= clf["test_acc"]["mean"] <= 1.0
    assert res.protocol["classifier"]["n_train_A"] == 500
    assert (tmp_path / "r" / "eval_report.html").is_file()
