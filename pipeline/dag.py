"""The Kubeflow pipeline: configure → data → preprocess → train → evaluate → export → register →
gate (a dry-run promotion) → promote, the last only when the gate accepts.

Two kinds of settings. **Hyperparameters** are pipeline parameters whose defaults come from
``params.yaml`` (embedded whole as ``params``, plus typed shortcuts and free ``overrides``), so a
run can change them in the UI or with ``submit --set``. **Deployment** settings (image, volume,
secrets, GPU type, resources) shape the pods and are fixed when the pipeline is compiled
(:class:`Deployment`, ``compile --image ... --accelerator ...``).
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from components import DEFAULT_IMAGE, build
from cyclegan.config import ConfigError, config_from_yaml

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_NAME = "cyclegan"
# Steps that talk to the network (S3, MLflow, the Kubernetes API): retried with back-off.
NETWORK_STEPS = ("data", "train", "evaluate", "export", "register", "gate", "promote")


@dataclass(frozen=True)
class Deployment:
    """Cluster-side settings baked into the compiled pipeline (defaults match ``k8s/``)."""

    image: str = DEFAULT_IMAGE
    pvc: str = "cyclegan-work"
    mount_path: str = "/mnt/work"
    tracking_uri: str = "http://mlflow.cyclegan.svc.cluster.local:5000"
    s3_secret: str = "cyclegan-s3"
    mlflow_secret: str = "cyclegan-mlflow"
    accelerator: str = "nvidia.com/gpu"  # "" = CPU-only train step
    step_gpus: int = 1  # GPUs of the train step's own pod (0 when it only launches TrainJobs)
    gpus_per_node: int = 1  # per TrainJob node, when train.nodes > 1
    gpu_node_selector: str = ""  # "label=value" picking the GPU model, e.g. for A100 nodes
    train_cpu: str = "4"
    train_memory: str = "16Gi"
    retries: int = 3  # kfp.local honours retries too: `run --local` sets 0 (fail fast)


S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")
MLFLOW_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def node_selector(text: str) -> dict[str, str]:
    """``"key=value"`` -> ``{key: value}`` (``""`` -> ``{}``), with an error naming the flag."""
    if not text:
        return {}
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--gpu-node-selector {text!r}: expected label=value")
    return {key.strip(): value.strip()}


def default_params_text(path: str | Path | None = None) -> str:
    """``params.yaml`` (validated) as one line of JSON, which is YAML too: the pipeline's defaults.
    One line because the KFP compiler copies defaults into the IR's header comment, where a
    multi-line string would break the YAML."""
    p = Path(path or ROOT / "params.yaml")
    if not p.is_file():
        raise ConfigError(f"params file not found: {p} (pass --params FILE)")
    raw = yaml.safe_load(p.read_text()) or {}
    config_from_yaml(json.dumps(raw))  # fail at compile time, naming the key, not in the cluster
    return json.dumps(raw, separators=(",", ":"))


def _secrets(task: Any, dep: Deployment, s3: bool, mlflow: bool) -> None:
    from kfp import kubernetes

    if s3:
        keys = {k: k for k in S3_KEYS}
        kubernetes.use_secret_as_env(task, dep.s3_secret, keys, optional=True)
    if mlflow:
        keys = {k: k for k in MLFLOW_KEYS}
        kubernetes.use_secret_as_env(task, dep.mlflow_secret, keys, optional=True)


def _network(task: Any, dep: Deployment) -> Any:
    if dep.retries:
        task.set_retry(num_retries=dep.retries, backoff_duration="30s", backoff_factor=2.0)
    return task


def build_pipeline(dep: Deployment | None = None, params_text: str | None = None) -> Any:
    """The pipeline function (a KFP GraphComponent) for ``dep``, defaults from ``params_text``."""
    from kfp import dsl, kubernetes

    dep = dep or Deployment()
    params_text = params_text or default_params_text()
    cfg = config_from_yaml(params_text)
    c = build(dep.image)

    class Outputs(NamedTuple):
        registered_version: str
        promotion_accepted: bool

    @dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0])
    def cyclegan(
        params: str = params_text,
        overrides: list = [],  # noqa: B006 (KFP needs a literal default)
        data_source: str = cfg.data.source,
        train_steps: int = cfg.train.steps,
        train_batch_size: int = cfg.train.batch_size,
        train_nodes: int = cfg.train.nodes,
        gpus_per_node: int = dep.gpus_per_node,
        tracking_uri: str = dep.tracking_uri,
        work_dir: str = dep.mount_path,
    ) -> Outputs:
        conf = c.configure(
            params=params,
            overrides=overrides,
            data_source=data_source,
            train_steps=train_steps,
            train_batch_size=train_batch_size,
            train_nodes=train_nodes,
            tracking_uri=tracking_uri,
        ).set_display_name("configure")
        config = conf.output
        data = c.data(config=config)
        preprocess = c.preprocess(config=config, raw=data.outputs["raw"])
        processed = preprocess.outputs["processed"]
        train = c.train(
            config=config,
            processed=processed,
            work_dir=work_dir,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            image=dep.image,
            gpus_per_node=gpus_per_node,
            gpu_node_selector=node_selector(dep.gpu_node_selector),
            pvc=dep.pvc,
        )
        train.set_caching_options(False)  # a run that trains must train (and may resume)
        train.set_cpu_request(dep.train_cpu).set_cpu_limit(dep.train_cpu)
        train.set_memory_request(dep.train_memory).set_memory_limit(dep.train_memory)
        if dep.accelerator and dep.step_gpus:
            train.set_accelerator_type(dep.accelerator).set_accelerator_limit(dep.step_gpus)
        kubernetes.mount_pvc(train, pvc_name=dep.pvc, mount_path=dep.mount_path)
        for key, value in node_selector(dep.gpu_node_selector).items():
            kubernetes.add_node_selector(train, key, value)
        run = train.outputs["run"]
        evaluate = c.evaluate(config=config, processed=processed, run=run)
        export = c.export(config=config, processed=processed, run=run)
        register = c.register(
            config=config,
            processed=processed,
            run=run,
            eval_dir=evaluate.outputs["eval_dir"],
            onnx=export.outputs["onnx"],
        )
        version = register.outputs["Output"]
        gate = c.promote(config=config, version=version, dry_run=True).set_display_name("gate")
        with dsl.If(gate.outputs["Output"] == True, name="gates-passed"):  # noqa: E712
            promote = c.promote(config=config, version=version, dry_run=False)
            promote.set_display_name("promote")

        for task, s3, mlflow in (
            (data, True, False),
            (train, False, True),
            (evaluate, True, True),
            (export, False, True),
            (register, False, True),
            (gate, False, True),
            (promote, False, True),
        ):
            _network(task, dep)
            _secrets(task, dep, s3, mlflow)
        return Outputs(registered_version=version, promotion_accepted=gate.outputs["Output"])

    return cyclegan
