"""One registry bench per session: three really trained, evaluated and registered candidates.

The server is the real ``mlflow server`` of ``tests/servers.py`` (PostgreSQL, S3 artefacts).
Each candidate is a 4-step training run with its own seed, evaluated with the weight-free
metrics; candidate 1 is exported to ONNX (the slow step) and all three are registered with those
ONNX files. Tests that promote get their own registered model (``bench.fresh(...)``) holding the
same three versions (same logged model, same evidence tags), so they never see each other.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from cyclegan.config import Config, config_from_dict
from cyclegan.register import CHALLENGER, RegisterResult
from tests.servers import MlflowServer
from tests.train_utils import tiny_params

BASE_MODEL = "bench"
METRIC = "AtoB.l1_to_gt"
_names = itertools.count(1)


@dataclass
class Candidate:
    cfg: Config
    registered: RegisterResult
    l1: float  # AtoB.l1_to_gt mean, lower is better


@dataclass
class RegistryBench:
    server: MlflowServer
    tmp: Path
    raw: dict[str, Any]  # params of candidate 1 (tracking at the server)
    candidates: list[Candidate]

    def params(self, **promote: Any) -> Config:
        """Candidate 1's config with a ``promote`` section (default: one gate on AtoB L1)."""
        raw = dict(self.raw, promote=promote or {"gates": [gate()]})
        return config_from_dict(raw)

    def params_file(self, name: str, **promote: Any) -> Path:
        raw = dict(self.raw, promote=promote or {"gates": [gate()]})
        path = self.tmp / f"params-{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    def by_quality(self) -> list[str]:
        """Versions (of a fresh model) from best to worst on AtoB L1."""
        order = sorted(range(3), key=lambda i: self.candidates[i].l1)
        return [str(i + 1) for i in order]

    def fresh(self, prefix: str) -> str:
        """A new registered model whose versions 1-3 are the three candidates."""
        import mlflow

        client = mlflow.MlflowClient(self.server.uri)
        name = f"{prefix}-{next(_names)}"
        client.create_registered_model(name)
        for c in self.candidates:
            mv = client.get_model_version(BASE_MODEL, c.registered.version)
            client.create_model_version(
                name,
                mv.source,
                mv.run_id,
                tags=dict(mv.tags),
                model_id=mv.source.removeprefix("models:/"),
            )
        client.set_registered_model_alias(name, CHALLENGER, "3")
        return name


def gate(**kw: Any) -> dict[str, Any]:
    return {"metric": METRIC, "direction": "lower", "min_margin": 0.0, **kw}


def _candidate_params(tmp: Path, uri: str, i: int) -> dict[str, Any]:
    return tiny_params(
        tmp,
        tmp / "data" / "processed",
        seed=i,
        data={"raw_dir": str(tmp / "data" / "raw"), "processed_dir": str(tmp / "data/processed")},
        preprocess={"size": 32},
        transforms={"load_size": 32, "crop_size": 32},
        train={
            "steps": 4,
            "out_dir": str(tmp / f"run{i}"),
            "log_every": 2,
            "sample_every": 4,
            "checkpoint_every": 4,
        },
        tracking={
            "enabled": True,
            "uri": uri,
            "experiment": "registry-tests",
            "registered_model": BASE_MODEL,
        },
        evaluate={
            "out_dir": str(tmp / f"metrics{i}"),
            "report_dir": str(tmp / f"report{i}"),
            "bootstrap": 50,
            "classifier_steps": 5,
            "report_images": 0,
            "fid": False,
            "lpips": False,
            "curve": False,
        },
        export={
            "out_dir": str(tmp / "onnx"),
            "metrics_file": str(tmp / "export.json"),
            "parity_sizes": [[32, 32], [37, 27]],
            "parity_images": 0,
        },
    )


def build_bench(server: MlflowServer, tmp: Path) -> RegistryBench:
    from cyclegan.data.synth import synthesize
    from cyclegan.evaluate import evaluate
    from cyclegan.export import export
    from cyclegan.preprocess import preprocess
    from cyclegan.register import register
    from cyclegan.train import train

    synthesize(tmp / "data" / "raw", train=8, test=4, size=32, seed=0, progress=False)
    candidates, first = [], None
    for i in (1, 2, 3):
        raw = _candidate_params(tmp, server.uri, i)
        cfg = config_from_dict(raw)
        if i == 1:
            preprocess(cfg)
            first = raw
        train(cfg)
        metrics = evaluate(cfg).metrics
        if i == 1:  # its MLflow logging is test_serving's business: skip the upload here
            export(replace(cfg, tracking=replace(cfg.tracking, enabled=False)))
        candidates.append(Candidate(cfg, register(cfg), metrics["AtoB"]["l1_to_gt"]["mean"]))
    assert first is not None
    return RegistryBench(server, tmp, first, candidates)


@pytest.fixture(scope="session")
def registry_bench(
    mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryBench]:
    tmp = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)  # no dvc.lock / mlruns of the project leak in or out
        bench = build_bench(mlflow_server, tmp)
    yield bench
