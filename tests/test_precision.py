"""``train.amp: auto`` is decided by a cached, per-machine probe; explicit settings always win."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from cyclegan.training import precision
from cyclegan.training.precision import choose
from tests.train_utils import make_synth, tiny_cfg

CPU = torch.device("cpu")
AMD = {"none": 1.0, "none+cl": 1.05, "bf16": 0.55, "bf16+cl": 0.5}  # bf16 1.8x: fast bf16
INTEL = {"none": 1.0, "none+cl": 1.09, "bf16": 1.5, "bf16+cl": 1.45}  # bf16 1.5x slower


def test_choose_fastest_over_the_noise_margin() -> None:
    assert choose(AMD) == ("bf16", True)
    assert choose(AMD, channels_last=False) == ("bf16", False)
    assert choose(INTEL) == ("none", False)
    assert choose({"none": 1.0, "bf16": 0.95}) == ("none", False)  # 1.05x: within noise
    assert choose({"none": 1.0, "bf16": 0.95}, margin=1.01) == ("bf16", False)
    gpu = {"none": 1.0, "bf16": 0.4, "fp16": 0.35, "fp16+cl": 0.3}
    assert choose(gpu) == ("fp16", True)


def test_choose_keeps_explicit_settings() -> None:
    assert choose(INTEL, amp="bf16") == ("bf16", False)  # explicit bf16 although slower
    assert choose(AMD, amp="none") == ("none", False)  # none+cl only 1.05x
    assert choose({"none": 1.0, "none+cl": 0.7, "bf16": 0.6}, amp="none") == ("none", True)
    assert choose(AMD, amp="bf16", channels_last=False) == ("bf16", False)
    assert choose({"none": 1.0}, amp="fp16") == ("fp16", False)  # not probed: as asked


@pytest.fixture
def fake_probe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict]:
    """The probe with injected timings (AMD-like); each call is recorded."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls: list[dict] = []

    def probe(shapes: dict, device: torch.device) -> dict[str, Any]:
        calls.append(shapes)
        speed = {k: round(AMD["none"] / v, 3) for k, v in AMD.items()}
        return {"seconds": dict(AMD), "speedup_vs_fp32": speed, "probe_s": 0.1}

    monkeypatch.setattr(precision, "run_probe", probe)
    return calls


def test_report_is_cached_per_machine_and_shapes(
    fake_probe: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_cfg(tmp_path, tmp_path, train={"amp": "auto", "batch_size": 1})
    first = precision.precision_report(cfg, CPU)
    assert (first["auto"], first["amp"], first["channels_last"]) == ("bf16", "bf16", False)
    assert first["cached"] is False and first["probe"]["seconds"] == AMD
    assert first["shapes"]["generator_block"] == [1, 32, 8, 8]  # ngf 8 * 4 at 32 / 4
    path = Path(first["cache_file"])
    assert path.parent == tmp_path / "cache" / "cyclegan" and path.is_file()
    again = precision.precision_report(cfg, CPU)
    assert again["cached"] is True and again["probe"] == first["probe"] and len(fake_probe) == 1
    # another network size, another machine or torch version: measured again
    wider = tiny_cfg(tmp_path, tmp_path, model={"ngf": 16}, train={"batch_size": 1})
    assert precision.precision_report(wider, CPU)["cached"] is False
    monkeypatch.setattr(precision, "device_name", lambda d: "cpu: Intel Xeon (avx512_bf16)")
    assert precision.precision_report(cfg, CPU)["cached"] is False
    monkeypatch.setattr(precision.torch, "__version__", "9.9.9")
    assert precision.precision_report(cfg, CPU)["cached"] is False
    assert len(fake_probe) == 4 and len(list(path.parent.glob("precision-*.json"))) == 4
    path.write_text("{not json")  # a damaged cache file is measured again, not an error
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "run_probe", lambda s, d: json.loads(json.dumps(first["probe"])))
    assert precision.precision_report(cfg, CPU)["cached"] is False
    assert json.loads(path.read_text())["probe"] == first["probe"]


def test_explicit_amp_wins_and_auto_reports_the_measured_pick(
    fake_probe: list[dict], tmp_path: Path
) -> None:
    explicit = tiny_cfg(tmp_path, tmp_path, train={"amp": "none"})
    assert precision.resolve(explicit, _Info()) == ("none", False, None)
    assert fake_probe == []  # nothing auto: no probe
    cfg = tiny_cfg(tmp_path, tmp_path, train={"amp": "none", "channels_last": "auto"})
    amp, cl, report = precision.resolve(cfg, _Info())
    assert (amp, cl) == ("none", False) and report["auto"] == "bf16"  # none+cl: 1.05x only
    cfg = tiny_cfg(tmp_path, tmp_path, train={"amp": "auto", "channels_last": "auto"})
    assert precision.resolve(cfg, _Info())[:2] == ("bf16", True)


class _Info:
    device, is_main, distributed = CPU, True, False


def test_real_probe_and_training_log_and_mlflow_params(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cyclegan.train import train

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # other tests probe too

    synth = make_synth(tmp_path / "synth")
    cfg = tiny_cfg(
        tmp_path,
        synth,
        train={"amp": "auto", "steps": 1, "checkpoint_every": 1, "sample_every": 1},
        tracking={"enabled": True},
    )
    report = precision.precision_report(cfg, CPU)  # the real probe on tiny shapes
    probe = report["probe"]
    assert set(probe["seconds"]) <= {"none", "none+cl", "bf16", "bf16+cl"}
    assert {"none", "bf16"} <= set(probe["seconds"]) and probe["seconds"]["none"] > 0
    assert report["auto"] == choose(probe["seconds"])[0] and report["cached"] is False
    assert report["device"].startswith("cpu: ")
    with caplog.at_level(logging.INFO, logger="cyclegan.train"):
        result = train(cfg)
    line = next(r.getMessage() for r in caplog.records if "precision:" in r.getMessage())
    assert f"amp={report['auto']}" in line and line.endswith("; cached)")
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking.uri)
    params = mlflow.get_run(result.mlflow_run_id).data.params
    assert params["precision.auto"] == params["precision.amp"] == report["auto"]
    assert params["precision.speedup.bf16"] == str(probe["speedup_vs_fp32"]["bf16"])
    assert params["precision.device"] == report["device"]


ZEN2 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 49
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx fma avx2

processor\t: 1
model name\t: something else
"""
SAPPHIRE = "model name\t: Intel(R) Xeon(R) Platinum 8481C\ncpu family\t: 6\nmodel\t\t: 143\n"


def test_cpu_model_tells_generations_under_one_name_apart() -> None:
    # "AMD EPYC" names Zen 2, 3 and 4 alike; only the family/model numbers and flags differ
    assert precision.cpu_model(ZEN2) == "AMD EPYC (cpu family 23, model 49; avx2)"
    zen4 = ZEN2.replace("model\t\t: 49", "model\t\t: 17").replace(
        "avx2", "avx2 avx512f avx512_bf16"
    )
    zen4 = zen4.replace("family\t: 23", "family\t: 25")
    assert (
        precision.cpu_model(zen4) == "AMD EPYC (cpu family 25, model 17; avx2 avx512f avx512_bf16)"
    )
    assert (
        precision.cpu_model(SAPPHIRE) == "Intel(R) Xeon(R) Platinum 8481C (cpu family 6, model 143)"
    )
    assert precision.device_name(CPU) == "cpu: " + precision.cpu_model()
