"""Multi-node training on Kubernetes: a Kubeflow Trainer v2 ``TrainJob`` running our train step.

The Kubeflow train component calls :func:`run_trainjob` when ``train.nodes > 1``. The job uses the
``torch-distributed`` runtime: every node runs ``torchrun -m cyclegan.cli train`` in the project
image (the runtime injects ``PET_NNODES``/``PET_NODE_RANK``/``PET_MASTER_ADDR``, which torchrun
reads), so the cluster runs exactly the code ``cyclegan train`` runs on a laptop. Data, params and
checkpoints live on a shared PVC: a restarted or preempted job resumes from the newest checkpoint
(``train.resume``). Credentials come from Kubernetes secrets as ``valueFrom`` env vars, never as
values in the object.

Building the object (:func:`build_trainjob`) is pure and checked twice: by the Trainer SDK's typed
models (``kubeflow_trainer_api``) and, in the tests, against the TrainJob CRD schema.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cyclegan.config import Config, config_to_yaml

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
NODE = "node"  # replicated job and container name in the torch-distributed runtime
MANAGER = "cyclegan-mlops"
SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class TrainJobError(RuntimeError):
    """The TrainJob failed, or could not be created or watched; the message has the job's reason."""


@dataclass(frozen=True)
class SecretEnv:
    """One environment variable read from a key of a Kubernetes secret."""

    name: str
    secret: str
    key: str


# The secrets k8s/ references (template: k8s/secrets.example.yaml): S3 for data and weights,
# MLflow credentials for the tracking server.
DEFAULT_SECRET_ENV = (
    SecretEnv("AWS_ACCESS_KEY_ID", "cyclegan-s3", "AWS_ACCESS_KEY_ID"),
    SecretEnv("AWS_SECRET_ACCESS_KEY", "cyclegan-s3", "AWS_SECRET_ACCESS_KEY"),
    SecretEnv("AWS_ENDPOINT_URL", "cyclegan-s3", "AWS_ENDPOINT_URL"),
    SecretEnv("MLFLOW_TRACKING_USERNAME", "cyclegan-mlflow", "MLFLOW_TRACKING_USERNAME"),
    SecretEnv("MLFLOW_TRACKING_PASSWORD", "cyclegan-mlflow", "MLFLOW_TRACKING_PASSWORD"),
)


@dataclass(frozen=True)
class TrainJobSpec:
    """Everything a multi-node run needs; the defaults match ``k8s/`` (PVC, secrets)."""

    name: str
    namespace: str
    image: str
    nodes: int
    params_file: str  # on the PVC, written by the component; its paths are absolute PVC paths
    overrides: tuple[str, ...] = ()
    gpus_per_node: int = 1
    gpu_resource: str = "nvidia.com/gpu"
    cpu: str = "4"
    memory: str = "16Gi"
    pvc: str = "cyclegan-work"
    mount_path: str = "/mnt/work"
    runtime: str = "torch-distributed"
    env: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)  # e.g. the GPU model's label
    secret_env: tuple[SecretEnv, ...] = ()
    active_deadline_s: int | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", self.name):
            raise TrainJobError(
                f"TrainJob name {self.name!r}: must be a DNS-1123 label (lower-case letters, "
                "digits and '-', at most 63 characters)"
            )
        if self.nodes < 1:
            raise TrainJobError(f"train.nodes: must be >= 1, got {self.nodes}")
        if self.gpus_per_node < 0:
            raise TrainJobError(f"gpus per node: must be >= 0, got {self.gpus_per_node}")
        if not self.mount_path.startswith("/"):
            raise TrainJobError(f"mount path {self.mount_path!r}: must be absolute")


def job_name(prefix: str, run_id: str) -> str:
    """A DNS-1123 name that is the same for every retry of one pipeline task (so it resumes)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{run_id}".lower()).strip("-")
    return slug[:63].rstrip("-") or "cyclegan-train"


def _security_context() -> dict[str, Any]:
    """Pod security standard 'restricted' for the training containers."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def build_trainjob(spec: TrainJobSpec) -> dict[str, Any]:
    """The TrainJob object (a plain dict for the Kubernetes API), checked by the SDK's models."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    procs = max(spec.gpus_per_node, 1)  # CPU nodes: one gloo process each
    limits = {"cpu": spec.cpu, "memory": spec.memory}
    if spec.gpus_per_node:
        limits[spec.gpu_resource] = str(spec.gpus_per_node)
    env = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    env += [
        {"name": s.name, "valueFrom": {"secretKeyRef": {"name": s.secret, "key": s.key}}}
        for s in spec.secret_env
    ]
    args = ["--params", spec.params_file]
    for o in spec.overrides:
        args += ["--set", o]
    volume = {"name": "work", "persistentVolumeClaim": {"claimName": spec.pvc}}
    container = {
        "name": NODE,
        "volumeMounts": [{"name": "work", "mountPath": spec.mount_path}],
        "securityContext": _security_context(),
    }
    pod_spec: dict[str, Any] = {"volumes": [volume], "containers": [container]}
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    patch = {
        "replicatedJobs": [{"name": NODE, "template": {"spec": {"template": {"spec": pod_spec}}}}]
    }
    trainer: dict[str, Any] = {
        "image": spec.image,
        "command": ["torchrun", "-m", "cyclegan.cli", "train"],
        "args": args,
        "numNodes": spec.nodes,
        "numProcPerNode": procs,
        "resourcesPerNode": {"requests": dict(limits), "limits": limits},
        "env": env,
    }
    job: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": {
                "app.kubernetes.io/part-of": "cyclegan",
                "app.kubernetes.io/component": "train",
            },
        },
        "spec": {
            "runtimeRef": {
                "name": spec.runtime,
                "kind": "ClusterTrainingRuntime",
                "apiGroup": GROUP,
            },
            "trainer": trainer,
            "runtimePatches": [
                {"manager": MANAGER, "trainingRuntimeSpec": {"template": {"spec": patch}}}
            ],
        },
    }
    if spec.active_deadline_s:
        job["spec"]["activeDeadlineSeconds"] = spec.active_deadline_s
    try:
        return TrainerV1alpha1TrainJob.from_dict(job).to_dict()
    except ValueError as e:  # pydantic: a field of the wrong type or shape
        raise TrainJobError(f"invalid TrainJob {spec.name}: {e}") from e


def job_state(obj: dict[str, Any]) -> tuple[str, str]:
    """``(state, reason)`` from a TrainJob's status: Created | Running | Suspended | Complete |
    Failed, with the job's own reason and message for the last condition that holds."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    true = [c for c in conditions if c.get("status") == "True"]
    for terminal in ("Failed", "Complete"):
        for c in true:
            if c.get("type") == terminal:
                why = ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
                return terminal, why
    if true:
        c = true[-1]
        return c.get("type", "Created"), ": ".join(
            x for x in (c.get("reason"), c.get("message")) if x
        )
    return "Created", ""


def current_namespace(default: str = "cyclegan") -> str:
    """The pod's own namespace (in-cluster), else ``default``."""
    try:
        with open(SA_NAMESPACE) as f:
            return f.read().strip() or default
    except OSError:
        return default


def _api() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as e:
            raise TrainJobError(
                f"no Kubernetes API to create the TrainJob on ({e}): train.nodes > 1 runs on a "
                "cluster (in a pipeline pod, or with a kubeconfig); use train.nodes=1 here"
            ) from e
    return client.CustomObjectsApi()


def run_trainjob(
    job: dict[str, Any],
    api: Any = None,
    poll_s: float = 15.0,
    timeout_s: float | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Create ``job`` (or adopt the one a previous attempt created), print every status change,
    return the final object; a failed job raises :class:`TrainJobError` with the job's reason.

    A retried pipeline step finds its job by name: a failed one is deleted and created again, and
    its nodes resume from the newest checkpoint on the shared volume.
    """
    from kubernetes.client.exceptions import ApiException

    api = api or _api()
    name, ns = job["metadata"]["name"], job["metadata"]["namespace"]
    where = f"TrainJob {ns}/{name}"
    args = (GROUP, VERSION, ns, PLURAL)
    try:
        api.create_namespaced_custom_object(*args, job)
        log(f"created {where} ({job['spec']['trainer']['numNodes']} nodes)")
    except ApiException as e:
        if e.status != 409:
            raise TrainJobError(f"cannot create {where}: {e.status} {e.reason}: {e.body}") from e
        old = api.get_namespaced_custom_object(*args, name)
        if job_state(old)[0] == "Failed":
            log(f"{where} exists and failed before: recreating it (it resumes from checkpoints)")
            api.delete_namespaced_custom_object(*args, name, propagation_policy="Foreground")
            _wait_gone(api, args, name, poll_s)
            api.create_namespaced_custom_object(*args, job)
        else:
            log(f"{where} exists (a previous attempt): watching it")
    start, last = time.monotonic(), None
    while True:
        obj = api.get_namespaced_custom_object(*args, name)
        state = job_state(obj)
        if state != last:
            log(f"{where}: {state[0]}" + (f" ({state[1]})" if state[1] else ""))
            last = state
        if state[0] == "Complete":
            return obj
        if state[0] == "Failed":
            raise TrainJobError(f"{where} failed: {state[1] or 'no reason given'}")
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TrainJobError(f"{where} still {state[0]} after {timeout_s:.0f}s")
        time.sleep(poll_s)


def _wait_gone(api: Any, args: tuple[str, ...], name: str, poll_s: float) -> None:
    from kubernetes.client.exceptions import ApiException

    for _ in range(120):
        try:
            api.get_namespaced_custom_object(*args, name)
        except ApiException as e:
            if e.status == 404:
                return
            raise
        time.sleep(poll_s)
    raise TrainJobError(f"TrainJob {name} was not deleted in time")


def publish_run(run_dir: str | Path, dest: str | Path) -> Path:
    """Copy a finished run folder (checkpoints, samples, curves, MLflow run id) to the pipeline's
    model artefact; checkpoints moved aside (other configs' ``stale-*``, and ``not-resumed-*``
    from runs with ``train.resume: false``) stay behind."""
    dest = Path(dest)
    aside = shutil.ignore_patterns("stale-*", "not-resumed-*")
    shutil.copytree(run_dir, dest, ignore=aside, dirs_exist_ok=True)
    return dest


def stage_shared(cfg: Config, mount_path: str) -> tuple[Config, Path]:
    """Put what every node reads on the shared volume: the processed data beside
    ``cfg.train.out_dir`` (which must be on the volume) and the params file, with absolute paths.
    Returns the nodes' config and the params file. A retry reuses a complete earlier copy."""
    out = Path(cfg.train.out_dir)
    if not out.is_absolute() or not out.resolve().is_relative_to(Path(mount_path).resolve()):
        raise TrainJobError(
            f"train.out_dir {out}: must be an absolute path on the shared volume {mount_path}"
        )
    data = out.parent / "data"
    if not data.exists():
        staging = out.parent / ".data.staging"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(cfg.data.processed_dir, staging)
        staging.rename(data)  # whole or nothing: a crash mid-copy leaves no half dataset
    cfg = replace(cfg, data=replace(cfg.data, processed_dir=str(data)))
    params = out.parent / "params.yaml"
    params.write_text(config_to_yaml(cfg))
    return cfg, params


def train_on_cluster(
    cfg: Config,
    *,
    image: str,
    run_id: str,
    mount_path: str,
    pvc: str = "cyclegan-work",
    gpus_per_node: int = 1,
    node_selector: dict[str, str] | None = None,
    namespace: str | None = None,
    secret_env: tuple[SecretEnv, ...] = (),
) -> dict[str, Any]:
    """Run ``cfg`` as a ``train.nodes``-node TrainJob on the shared volume and wait for it."""
    cfg, params = stage_shared(cfg, mount_path)
    spec = TrainJobSpec(
        name=job_name("cyclegan-train", run_id),
        namespace=namespace or current_namespace(),
        image=image,
        nodes=cfg.train.nodes,
        params_file=str(params),
        gpus_per_node=gpus_per_node,
        node_selector=node_selector or {},
        pvc=pvc,
        mount_path=mount_path,
        secret_env=secret_env or DEFAULT_SECRET_ENV,
    )
    return run_trainjob(build_trainjob(spec))
