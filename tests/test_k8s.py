"""k8s/ and the image, checked offline: every kustomization renders with the real kubectl, every
object validates against the Kubernetes schemas (kubernetes-validate) or the Trainer/PyTorchJob
CRDs, pod security is 'restricted', RBAC is TrainJobs only; hadolint and checkov pass."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s_support import CRDS, SCHEMAS, crd_validate, k8s_validate

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
K8S = ROOT / "k8s"
KUSTOMIZATIONS = ["base", "overlays/local", "overlays/production", "optional/kserve", "legacy"]
POD_KINDS = {"Deployment", "StatefulSet", "Job", "DaemonSet"}


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"{name} not installed (make install provides it)")
        return found
    return str(path)


def render(kustomization: str) -> list[dict[str, Any]]:
    res = subprocess.run(
        [_tool("kubectl"), "kustomize", str(K8S / kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {k: render(k) for k in KUSTOMIZATIONS}


def _validate(obj: dict[str, Any]) -> None:
    if obj["kind"] in CRDS:
        crd_validate(obj)
        return
    if obj["apiVersion"].startswith("serving.kserve.io/"):
        # KServe's CRD is not among the shared schemas: check the fields KServe requires.
        model = obj["spec"]["predictor"]["model"]
        assert model["modelFormat"]["name"] == "onnx" and model["storageUri"].startswith("s3://")
        return
    k8s_validate(obj)


def test_every_object_validates(rendered: dict[str, list[dict[str, Any]]]) -> None:
    if not SCHEMAS.is_dir():
        pytest.skip(f"CRD schemas not found at {SCHEMAS} (only CI and devs have ../shared)")
    kinds = set()
    for name, objs in rendered.items():
        assert objs, name
        for obj in objs:
            _validate(obj)
            kinds.add(obj["kind"])
            ns = obj["metadata"].get("namespace")
            assert obj["kind"] == "Namespace" or ns == "cyclegan", f"{name}: {obj['kind']} in {ns}"
    for kind in ("Namespace", "Deployment", "StatefulSet", "Service", "PersistentVolumeClaim"):
        assert kind in kinds
    for kind in ("Role", "RoleBinding", "NetworkPolicy", "PyTorchJob", "InferenceService"):
        assert kind in kinds
    assert "Secret" not in kinds  # secrets are templates only (k8s/secrets.example.yaml)


def test_validation_rejects_a_broken_object(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The validators are not vacuous: a typo'd field and a wrong type are refused."""
    import kubernetes_validate

    deploy = next(o for o in rendered["base"] if o["kind"] == "Deployment")
    bad = yaml.safe_load(yaml.safe_dump(deploy))
    bad["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(bad)
    if SCHEMAS.is_dir():
        job = next(o for o in rendered["legacy"] if o["kind"] == "PyTorchJob")
        bad = yaml.safe_load(yaml.safe_dump(job))
        bad["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = "two"
        with pytest.raises(Exception, match="two"):
            crd_validate(bad)


def _pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] in POD_KINDS:
        return [obj["spec"]["template"]["spec"]]
    if obj["kind"] == "PyTorchJob":
        return [r["template"]["spec"] for r in obj["spec"]["pytorchReplicaSpecs"].values()]
    return []


def test_pod_security_restricted(rendered: dict[str, list[dict[str, Any]]]) -> None:
    n = 0
    for name, objs in rendered.items():
        for obj in objs:
            for pod in _pod_specs(obj):
                where = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
                sc = pod["securityContext"]
                assert sc["runAsNonRoot"] is True, where
                assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
                assert pod.get("automountServiceAccountToken") is False, where
                for c in pod.get("initContainers", []) + pod["containers"]:
                    csc = c["securityContext"]
                    assert csc["allowPrivilegeEscalation"] is False, f"{where} {c['name']}"
                    assert csc["capabilities"]["drop"] == ["ALL"], f"{where} {c['name']}"
                    assert {"cpu", "memory"} <= set(c["resources"]["limits"]), (
                        f"{where} {c['name']}"
                    )
                    assert ":" in c["image"] and not c["image"].endswith(":latest"), c["image"]
                    if obj["kind"] != "PyTorchJob":  # torch needs a writable root (compile caches)
                        assert csc["readOnlyRootFilesystem"] is True, f"{where} {c['name']}"
                n += 1
    assert n >= 5
    ns = next(o for o in rendered["base"] if o["kind"] == "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_rbac_is_trainjobs_only(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for objs in rendered.values():
        assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = [o for o in rendered["base"] if o["kind"] == "Role"]
    assert len(roles) == 1
    assert roles[0]["rules"] == [
        {
            "apiGroups": ["trainer.kubeflow.org"],
            "resources": ["trainjobs"],
            "verbs": ["create", "get", "list", "watch", "delete"],
        }
    ]
    (binding,) = [o for o in rendered["base"] if o["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == roles[0]["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "cyclegan-pipeline", "namespace": "cyclegan"}
    ]


def test_network_policy_denies_by_default(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name in ("overlays/local", "overlays/production"):
        pols = {o["metadata"]["name"]: o for o in rendered[name] if o["kind"] == "NetworkPolicy"}
        deny = pols["default-deny-ingress"]["spec"]
        assert deny["podSelector"] == {} and "ingress" not in deny
        assert pols["mlflow-ingress"]["spec"]["ingress"][0]["ports"] == [
            {"protocol": "TCP", "port": 5000}
        ]
    local = {o["metadata"]["name"] for o in rendered["overlays/local"]}
    assert {"minio-ingress", "postgres-ingress", "minio", "postgres"} <= local


def test_overlays_differ_where_they_should(rendered: dict[str, list[dict[str, Any]]]) -> None:
    def find(name: str, kind: str, obj_name: str) -> dict[str, Any]:
        return next(
            o for o in rendered[name] if o["kind"] == kind and o["metadata"]["name"] == obj_name
        )

    local = find("overlays/local", "PersistentVolumeClaim", "cyclegan-work")
    prod = find("overlays/production", "PersistentVolumeClaim", "cyclegan-work")
    assert local["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert prod["spec"]["accessModes"] == ["ReadWriteMany"] and prod["spec"]["storageClassName"]
    kinds_prod = {o["kind"] for o in rendered["overlays/production"]}
    assert "StatefulSet" not in kinds_prod  # external database and S3
    mlflow = find("overlays/production", "Deployment", "mlflow")
    args = mlflow["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--serve-artifacts" in args
    assert mlflow["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        "registry.example.com/"
    )


def _secret_refs(objs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    refs: set[tuple[str, str]] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("secretKeyRef")
            if ref:
                refs.add((ref["name"], ref["key"]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(objs)
    return refs


def test_secret_template_covers_every_reference(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Every secret key a manifest, the pipeline or a TrainJob reads is in the template, and the
    template holds placeholders only."""
    from cyclegan.k8s_trainjob import DEFAULT_SECRET_ENV
    from pipeline.dag import MLFLOW_KEYS, S3_KEYS, Deployment

    template = [d for d in yaml.safe_load_all((K8S / "secrets.example.yaml").read_text()) if d]
    have = set()
    for s in template:
        k8s_validate(s)
        assert set(s["stringData"].values()) == {"REPLACE_ME"}
        have |= {(s["metadata"]["name"], k) for k in s["stringData"]}
    need = _secret_refs([o for objs in rendered.values() for o in objs])
    dep = Deployment()
    need |= {(dep.s3_secret, k) for k in S3_KEYS} | {(dep.mlflow_secret, k) for k in MLFLOW_KEYS}
    need |= {(s.secret, s.key) for s in DEFAULT_SECRET_ENV}
    assert need <= have, f"missing from k8s/secrets.example.yaml: {sorted(need - have)}"


def test_hadolint_dockerfile() -> None:
    res = subprocess.run(
        [_tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_image_variants_keep_the_lock() -> None:
    """CPU: the lock with torch/torchvision as +cpu builds and no CUDA libraries; CUDA: the lock."""
    script, lock = ROOT / "docker" / "constraints-variant.sh", ROOT / "constraints.txt"
    cpu = subprocess.run(["sh", script, "cpu", lock], capture_output=True, text=True, check=True)
    cuda = subprocess.run(["sh", script, "cuda", lock], capture_output=True, text=True, check=True)
    assert cuda.stdout == lock.read_text()
    pins = dict(line.split("==") for line in cpu.stdout.splitlines() if "==" in line)
    locked = dict(line.split("==") for line in lock.read_text().splitlines() if "==" in line)
    assert pins["torch"] == locked["torch"] + "+cpu"
    assert pins["torchvision"] == locked["torchvision"] + "+cpu"
    assert not [k for k in pins if k.startswith("nvidia-") or k == "triton"]
    assert {k: v for k, v in pins.items() if not k.startswith("torch")} == {
        k: v for k, v in locked.items() if k in pins and not k.startswith("torch")
    }
    bad = subprocess.run(["sh", script, "rocm", lock], capture_output=True, text=True)
    assert bad.returncode == 2 and "VARIANT must be cpu or cuda" in bad.stderr


def test_make_image_without_an_engine(tmp_path: Path) -> None:
    """No docker/podman on PATH: a clear message and a non-zero exit, nothing built."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make not installed")
    env = {**os.environ, "PATH": str(tmp_path)}  # an empty PATH dir: no docker, no podman
    (tmp_path / "sh").symlink_to(shutil.which("sh"))
    res = subprocess.run(
        [make, "-s", "image"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode != 0
    assert "neither docker nor podman is installed" in res.stderr


def _checkov() -> str:
    for cand in (ROOT / ".venv-tools/bin/checkov", Path("/work/main/.venv-tools/bin/checkov")):
        if cand.exists():
            return str(cand)
    found = shutil.which("checkov")
    if found is None:
        pytest.skip("checkov not installed (make install builds .venv-tools)")
    return found


def test_checkov_dockerfile_and_manifests(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    for name, objs in rendered.items():
        (tmp_path / f"{name.replace('/', '-')}.yaml").write_text(yaml.safe_dump_all(objs))
    shutil.copy(K8S / "secrets.example.yaml", tmp_path)
    shutil.copy(ROOT / "Dockerfile", tmp_path)
    res = subprocess.run(
        [
            *(_checkov(), "--config-file", str(ROOT / ".checkov.yaml"), "-d", str(tmp_path)),
            *("--framework", "kubernetes", "dockerfile", "-o", "json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    import json

    reports = json.loads(res.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    types = {r["check_type"] for r in reports}
    assert types == {"kubernetes", "dockerfile"}, types
    failed = [
        (r["check_type"], f["check_id"], f["resource"])
        for r in reports
        for f in r["results"]["failed_checks"]
    ]
    assert not failed, failed
    assert all(r["summary"]["passed"] > 50 for r in reports)
