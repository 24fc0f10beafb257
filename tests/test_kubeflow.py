"""The Kubeflow side on this machine: the real KFP compiler's IR, the TrainJob objects the train
step builds (validated against the Trainer CRD), the CLI's errors, and the whole pipeline run
end to end with kfp.local's subprocess runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cyclegan.config import load_config
from cyclegan.k8s_trainjob import (
    DEFAULT_SECRET_ENV,
    TrainJobError,
    TrainJobSpec,
    build_trainjob,
    job_name,
    job_state,
)
from tests.k8s_support import SCHEMAS, crd_validate

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["configure", "data", "preprocess", "train", "evaluate", "export", "register", "gate"]


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def _cli(*args: str, cwd: Path = ROOT, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def ir(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    out = tmp_path_factory.mktemp("ir") / "cyclegan.yaml"
    gpu = "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3"
    res = _cli(
        *("compile", "--output", str(out), "--image", "registry.example.com/cg:1.2.3"),
        *("--gpu-node-selector", gpu),
    )
    assert res.returncode == 0, res.stderr
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task of the DAG (also inside conditions), by display name."""
    tasks = {}
    for comp in [spec["root"], *spec["components"].values()]:
        for t in comp.get("dag", {}).get("tasks", {}).values():
            tasks[t["taskInfo"]["name"]] = t
    return tasks


def test_ir_has_every_step_on_the_project_image(ir: tuple[dict, dict]) -> None:
    spec, _ = ir
    tasks = _tasks(spec)
    assert set(STEPS) | {"promote", "gates-passed"} <= set(tasks)
    for name, ex in spec["deploymentSpec"]["executors"].items():
        assert ex["container"]["image"] == "registry.example.com/cg:1.2.3", name
        assert "pip install" not in " ".join(ex["container"]["command"]), name  # image has it all


def test_ir_parameters_default_from_params_yaml(ir: tuple[dict, dict]) -> None:
    spec, _ = ir
    params = spec["root"]["inputDefinitions"]["parameters"]
    cfg = load_config(ROOT / "params.yaml")
    assert params["train_steps"]["defaultValue"] == cfg.train.steps
    assert params["train_batch_size"]["defaultValue"] == cfg.train.batch_size
    assert params["train_nodes"]["defaultValue"] == cfg.train.nodes
    assert params["data_source"]["defaultValue"] == cfg.data.source
    embedded = yaml.safe_load(params["params"]["defaultValue"])
    assert embedded == yaml.safe_load((ROOT / "params.yaml").read_text())


def test_ir_train_resources_caching_and_retries(ir: tuple[dict, dict]) -> None:
    spec, _ = ir
    tasks = _tasks(spec)
    res = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert res["accelerator"]["resourceCount"] == "1"
    assert res["resourceCpuRequest"] == res["resourceCpuLimit"] == "4"
    assert res["resourceMemoryRequest"] == res["resourceMemoryLimit"] == "16Gi"
    assert tasks["train"]["cachingOptions"].get("enableCache", False) is False
    assert tasks["preprocess"]["cachingOptions"]["enableCache"] is True
    for name in ("data", "train", "evaluate", "export", "register", "gate", "promote"):
        assert tasks[name]["retryPolicy"]["maxRetryCount"] == 3, name
    for name in ("configure", "preprocess"):  # no network: a failure there is deterministic
        assert "retryPolicy" not in tasks[name], name


def test_ir_promotion_only_when_the_gate_passes(ir: tuple[dict, dict]) -> None:
    spec, _ = ir
    tasks = _tasks(spec)
    cond = tasks["gates-passed"]
    gate_key = next(k for k, t in spec["root"]["dag"]["tasks"].items() if t is tasks["gate"])
    assert cond["triggerPolicy"]["condition"] == (
        f"inputs.parameter_values['pipelinechannel--{gate_key}-Output'] == true"
    )
    assert gate_key in cond["dependentTasks"]
    gate_args = tasks["gate"]["inputs"]["parameters"]
    assert gate_args["dry_run"]["runtimeValue"]["constant"] is True
    assert tasks["promote"]["inputs"]["parameters"]["dry_run"]["runtimeValue"]["constant"] is False
    outputs = spec["root"]["outputDefinitions"]["parameters"]
    assert set(outputs) == {"registered_version", "promotion_accepted"}


def test_ir_pvc_and_secret_wiring(ir: tuple[dict, dict]) -> None:
    spec, executors = ir
    assert executors["exec-train"]["nodeSelector"]["labels"] == {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"
    }
    train_args = _tasks(spec)["train"]["inputs"]["parameters"]
    assert train_args["gpu_node_selector"]["runtimeValue"]["constant"] == {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"
    }  # the TrainJob's nodes land on the same GPU model
    assert executors["exec-train"]["pvcMount"][0]["mountPath"] == "/mnt/work"
    assert executors["exec-train"]["pvcMount"][0]["constant"] == "cyclegan-work"
    secrets = {
        name: {s["secretName"]: {k["envVar"] for k in s["keyToEnv"]} for s in ex["secretAsEnv"]}
        for name, ex in executors.items()
    }
    s3 = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"}
    assert secrets["exec-data"] == {"cyclegan-s3": s3}
    assert secrets["exec-evaluate"]["cyclegan-s3"] == s3
    for name in ("exec-train", "exec-evaluate", "exec-export", "exec-register", "exec-promote"):
        assert "MLFLOW_TRACKING_PASSWORD" in secrets[name]["cyclegan-mlflow"], name
    assert "exec-preprocess" not in executors and "exec-configure" not in executors


# --- TrainJob (multi-node training) ---------------------------------------------------------

SPECS = [
    TrainJobSpec("cyclegan-train-a", "cyclegan", "img:1", 2, "/mnt/work/r/params.yaml"),
    TrainJobSpec(
        "cyclegan-train-b",
        "team-ml",
        "registry.example.com/cg:1.2.3-cuda",
        8,
        "/data/r/params.yaml",
        overrides=("train.steps=20000", "train.amp=bf16"),
        gpus_per_node=8,
        gpu_resource="amd.com/gpu",
        cpu="32",
        memory="256Gi",
        pvc="shared",
        mount_path="/data",
        env={"NCCL_DEBUG": "WARN"},
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        secret_env=DEFAULT_SECRET_ENV,
        active_deadline_s=86400,
    ),
    TrainJobSpec("cpu-job", "ns", "img:1", 3, "/mnt/work/p.yaml", gpus_per_node=0),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_trainjob_validates_against_the_crd(spec: TrainJobSpec) -> None:
    if not SCHEMAS.is_dir():
        pytest.skip(f"CRD schemas not found at {SCHEMAS} (only CI and devs have ../shared)")
    job = build_trainjob(spec)
    crd_validate(job)
    t = job["spec"]["trainer"]
    assert job["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert t["numNodes"] == spec.nodes and t["numProcPerNode"] == max(spec.gpus_per_node, 1)
    assert t["command"] == ["torchrun", "-m", "cyclegan.cli", "train"]
    assert t["args"][:2] == ["--params", spec.params_file]
    assert t["args"][2:] == [x for o in spec.overrides for x in ("--set", o)]
    limits = t["resourcesPerNode"]["limits"]
    assert limits.get(spec.gpu_resource) == (
        str(spec.gpus_per_node) if spec.gpus_per_node else None
    )
    pod = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    pod = pod["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == spec.pvc
    assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == spec.mount_path
    assert pod["containers"][0]["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod.get("nodeSelector", {}) == spec.node_selector
    for e in t.get("env", []):  # credentials only by reference, never as values
        assert "value" in e or e["valueFrom"]["secretKeyRef"]["name"].startswith("cyclegan-")
        assert "SECRET" not in e["name"] or "valueFrom" in e


def test_trainjob_crd_catches_what_the_code_could_get_wrong() -> None:
    if not SCHEMAS.is_dir():
        pytest.skip(f"CRD schemas not found at {SCHEMAS}")
    import jsonschema

    job = build_trainjob(SPECS[0])
    job["spec"]["trainer"]["numNodes"] = "2"
    with pytest.raises(jsonschema.ValidationError, match="'2' is not of type 'integer'"):
        crd_validate(job)
    job = build_trainjob(SPECS[0])
    job["spec"]["trainer"]["nodes"] = 2
    with pytest.raises(jsonschema.ValidationError, match="nodes"):
        crd_validate(job)


def test_trainjob_spec_errors_name_the_problem() -> None:
    with pytest.raises(TrainJobError, match="DNS-1123"):
        TrainJobSpec("Bad_Name", "ns", "img:1", 2, "/p.yaml")
    with pytest.raises(TrainJobError, match=r"train.nodes: must be >= 1, got 0"):
        TrainJobSpec("ok", "ns", "img:1", 0, "/p.yaml")
    with pytest.raises(TrainJobError, match="must be absolute"):
        TrainJobSpec("ok", "ns", "img:1", 2, "/p.yaml", mount_path="work")
    with pytest.raises(TrainJobError, match="invalid TrainJob"):
        build_trainjob(TrainJobSpec("ok", "ns", "img:1", 2, "/p.yaml", env={"X": 1}))  # type: ignore[dict-item]


def test_job_name_is_stable_and_valid() -> None:
    run = "0f1e2d3c-AAAA-bbbb-cccc-1234567890ab"
    name = job_name("cyclegan-train", run)
    assert name == job_name("cyclegan-train", run)  # a retry finds its own job and resumes
    assert len(name) <= 63 and name == name.lower() and not name.endswith("-")
    TrainJobSpec(name, "ns", "img:1", 2, "/p.yaml")  # accepted as a name


def test_job_state_reads_the_trainer_conditions() -> None:
    def cond(t: str, status: str = "True", reason: str = "", msg: str = "") -> dict[str, str]:
        return {"type": t, "status": status, "reason": reason, "message": msg}

    assert job_state({}) == ("Created", "")
    assert job_state({"status": {"conditions": [cond("Suspended", "False")]}}) == ("Created", "")
    failed = {
        "status": {
            "conditions": [
                cond("Suspended", "False"),
                cond(
                    "Failed", reason="JobSetFailed", msg="node-1 exited with code 137 (OOMKilled)"
                ),
            ]
        }
    }
    assert job_state(failed) == ("Failed", "JobSetFailed: node-1 exited with code 137 (OOMKilled)")
    done = {"status": {"conditions": [cond("Complete", reason="JobSetCompleted")]}}
    assert job_state(done) == ("Complete", "JobSetCompleted")


def test_train_nodes_is_validated() -> None:
    from cyclegan.config import ConfigError

    with pytest.raises(ConfigError, match=r"train.nodes: must be >= 1, got 0"):
        load_config(None, ["train.nodes=0"])
    assert load_config(None, ["train.nodes=4"]).train.nodes == 4


# --- CLI -------------------------------------------------------------------------------------


def test_submit_to_an_unreachable_host_is_a_clear_error() -> None:
    res = _cli("submit", "--host", "http://127.0.0.1:9", timeout=60)
    assert res.returncode == 2
    assert res.stderr.startswith("error: cannot reach Kubeflow Pipelines at http://127.0.0.1:9")
    assert "Traceback" not in res.stderr


def test_bad_params_fail_at_compile_time(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  batch_size: 0\n")
    res = _cli("compile", "--output", str(tmp_path / "x.yaml"), "--params", str(bad))
    assert res.returncode == 2
    assert res.stderr.strip() == "error: train.batch_size: must be >= 1, got 0"
    assert not (tmp_path / "x.yaml").exists()
    res = _cli("compile", "--output", str(tmp_path / "x.yaml"), "--gpu-node-selector", "a100")
    assert res.returncode == 2
    assert res.stderr.strip() == "error: --gpu-node-selector 'a100': expected label=value"


# --- the whole pipeline, locally -------------------------------------------------------------


def test_pipeline_runs_locally_end_to_end(tmp_path: Path) -> None:
    """`python -m pipeline run --local`: every step for real (tiny config), artefacts printed,
    a registered version, and a promotion decision that the gate and the registry agree on."""
    pytest.importorskip("cyclegan.register", reason="the register step (registry branch)")
    pytest.importorskip("cyclegan.promote", reason="the promote step (registry branch)")
    work = tmp_path / "kfp"
    res = _cli("run", "--local", "--workdir", str(work), cwd=tmp_path, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    out = res.stdout
    assert "registered version: 1" in out
    accepted = "promotion: accepted; @champion is version 1" in out
    assert accepted or "promotion: refused by the gates; @champion is not set" in out
    listing = out.split("; artefacts:\n", 1)[1].split("MLflow store:", 1)[0]
    lines = dict(line.split(None, 1) for line in listing.splitlines())
    for key in ("data/raw", "train/run", "evaluate/report", "export/onnx", "register/card"):
        assert key in lines, f"{key} not listed in:\n{out}"
    onnx = Path(lines["export/onnx"])
    assert {p.name for p in onnx.glob("*.onnx")} == {"generator_AtoB.onnx", "generator_BtoA.onnx"}
    assert "<html" in Path(lines["evaluate/report"]).read_text()[:2000].lower()
    assert (Path(lines["train/run"]) / "checkpoints" / "last.pt").is_file()
    gate = Path(lines["gate/decision"]).read_text()  # the dry-run decision
    assert ("ACCEPTED" if accepted else "REFUSED") in gate and "(dry run)" in gate
    assert ("promote/decision" in lines) == accepted, lines  # inside dsl.If: ran iff accepted
    if accepted:
        assert "ACCEPTED" in Path(lines["promote/decision"]).read_text()
    ex = json.loads((Path(lines["evaluate/report"]).parent / "executor_output.json").read_text())
    scores = ex["artifacts"]["scores"]["artifacts"][0]["metadata"]  # the KFP UI's metrics
    assert 0 <= scores["AtoB.l1_to_gt.mean"] <= 1 and scores["AtoB.l1_to_gt.n"] == 4
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    aliases = client.get_registered_model("cyclegan").aliases
    assert ("champion" in aliases) == accepted, aliases


def test_trainjob_nodes_run_the_staged_params_with_torchrun(tmp_path: Path) -> None:
    """What each TrainJob node runs, run here: two torchrun launchers as two 'nodes' on loopback,
    configured only by the PET_* variables the torch-distributed runtime injects, executing the
    built TrainJob's command and args on the params that stage_shared wrote to the volume."""
    import socket

    from cyclegan.k8s_trainjob import stage_shared
    from tests.train_utils import cli_env, make_synth, tiny_cfg

    vol = tmp_path / "vol"  # the PVC
    synth = make_synth(tmp_path / "processed", train=8, test=2)
    out = vol / "run-1" / "train"
    cfg = tiny_cfg(tmp_path, synth, train={"steps": 2, "checkpoint_every": 2, "out_dir": str(out)})
    with pytest.raises(TrainJobError, match="must be an absolute path on the shared volume"):
        stage_shared(cfg, str(tmp_path / "elsewhere"))
    node_cfg, params = stage_shared(cfg, str(vol))
    assert node_cfg.data.processed_dir == str(vol / "run-1" / "data")
    assert sorted(p.name for p in (vol / "run-1" / "data").iterdir()) == sorted(
        p.name for p in synth.iterdir()
    )
    job = build_trainjob(
        TrainJobSpec("t", "ns", "img:1", 2, str(params), gpus_per_node=0, mount_path=str(vol))
    )
    trainer = job["spec"]["trainer"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bindir = str(Path(sys.executable).parent)
    procs = []
    for rank in range(trainer["numNodes"]):
        env = {
            **cli_env(),
            "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": _env()["PYTHONPATH"],
            "PET_NNODES": str(trainer["numNodes"]),
            "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
            "PET_NODE_RANK": str(rank),
            "PET_MASTER_ADDR": "127.0.0.1",
            "PET_MASTER_PORT": str(port),
        }
        cmd = trainer["command"] + trainer["args"]
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    logs = [p.communicate(timeout=300) for p in procs]
    for p, (_, e) in zip(procs, logs, strict=True):
        assert p.returncode == 0, e[-3000:]
    assert "world size 2, per-process batch 2, global batch 4" in logs[0][1]
    assert (out / "checkpoints" / "last.pt").is_file()


class _RecordedApi:
    """Stands in for CustomObjectsApi with a scripted list of TrainJob states. It proves our
    create/adopt/watch/fail logic only; no claim about a real API server is made here."""

    def __init__(self, states: list[dict[str, Any]], exists: dict[str, Any] | None = None):
        self.states, self.exists, self.calls = list(states), exists, []

    def create_namespaced_custom_object(self, group, version, ns, plural, body):
        from kubernetes.client.exceptions import ApiException

        self.calls.append("create")
        if self.exists is not None:
            raise ApiException(status=409, reason="AlreadyExists")

    def get_namespaced_custom_object(self, group, version, ns, plural, name):
        from kubernetes.client.exceptions import ApiException

        if self.exists is not None:
            return self.exists
        if self.calls[-1] == "delete":
            self.calls.append("gone")
            raise ApiException(status=404, reason="NotFound")
        return self.states.pop(0)

    def delete_namespaced_custom_object(self, group, version, ns, plural, name, **kw):
        self.calls.append("delete")
        self.exists = None


def _status(*conds: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "status": {
            "conditions": [
                {"type": t, "status": "True", "reason": r, "message": m} for t, r, m in conds
            ]
        }
    }


def test_run_trainjob_fails_with_the_jobs_reason_and_recreates_a_failed_job() -> None:
    from cyclegan.k8s_trainjob import run_trainjob

    job = build_trainjob(SPECS[0])
    log: list[str] = []
    oom = ("Failed", "JobSetFailed", "node-1 OOMKilled")
    api = _RecordedApi([_status(), _status(("Running", "", "")), _status(oom)])
    with pytest.raises(
        TrainJobError, match=r"cyclegan/cyclegan-train-a failed: JobSetFailed: node-1"
    ):
        run_trainjob(job, api=api, poll_s=0, log=log.append)
    assert log == [
        "created TrainJob cyclegan/cyclegan-train-a (2 nodes)",
        "TrainJob cyclegan/cyclegan-train-a: Created",
        "TrainJob cyclegan/cyclegan-train-a: Running",
        "TrainJob cyclegan/cyclegan-train-a: Failed (JobSetFailed: node-1 OOMKilled)",
    ]
    # the retried step finds the failed job, deletes it, creates it again and watches it finish
    api = _RecordedApi([_status(("Complete", "JobSetCompleted", ""))], exists=_status(oom))
    final = run_trainjob(job, api=api, poll_s=0, log=log.append)
    assert api.calls == ["create", "delete", "gone", "create"]
    assert job_state(final) == ("Complete", "JobSetCompleted")


def test_multi_node_without_a_cluster_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cyclegan.k8s_trainjob import run_trainjob

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(TrainJobError, match=r"no Kubernetes API .* use train.nodes=1 here"):
        run_trainjob(build_trainjob(SPECS[0]))
