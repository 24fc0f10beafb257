"""``python -m pipeline compile|run --local|submit``: compile the IR, run the whole DAG on this
machine with kfp.local (no Docker, no cluster), or submit it to a Kubeflow Pipelines endpoint.

Errors a user can fix (bad params, unreachable host) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from cyclegan.config import ConfigError, parse_override
from pipeline.dag import Deployment, build_pipeline, default_params_text

# `run --local` trains on the embedded benchmark shrunk to seconds (real steps, tiny sizes).
LOCAL_FAST = [
    "data.synth={train: 12, test: 4, size: 32, seed: 0}",
    "preprocess.size=32",
    "transforms.load_size=32",
    "transforms.crop_size=32",
    "model.ngf=8",
    "model.ndf=8",
    "train.steps=4",
    "train.batch_size=2",
    "train.checkpoint_every=2",
    "train.sample_every=2",
    "train.eval_every=2",
    "train.log_every=1",
    "train.threads=1",
    "evaluate.bootstrap=50",
    "evaluate.classifier_steps=10",
    "evaluate.report_images=2",
    "evaluate.download=false",
    "evaluate.curve=false",
    "export.parity_sizes=[[48, 32]]",
    "export.parity_images=1",
]


class PipelineError(RuntimeError):
    """A user-fixable problem (unreachable host, bad argument)."""


def _deployment(args: argparse.Namespace) -> Deployment:
    keys = ("image", "pvc", "tracking_uri", "accelerator", "step_gpus", "gpus_per_node")
    keys += ("gpu_node_selector",)
    given = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    return Deployment(**given)


def _pipeline(args: argparse.Namespace) -> Any:
    return build_pipeline(_deployment(args), default_params_text(args.params))


def compile_pipeline(args: argparse.Namespace) -> int:
    from kfp import compiler

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(_pipeline(args), str(out))
    print(f"wrote {out} (pipeline IR; image {_deployment(args).image})")
    return 0


def run_local(workdir: Path, overrides: list[str], params: str | None = None) -> dict[str, Any]:
    """Run every step here with kfp.local's subprocess runner in this Python environment.

    What kfp.local does not do, and the cluster does: Kubernetes platform settings (PVC, secrets,
    GPU and CPU requests) are compiled into the IR but ignored here; the train step uses a folder
    under ``workdir`` as its shared volume, MLflow is a sqlite store in ``workdir``, and retries
    are off (a local failure is not transient). Conditions (the promotion gate) run as on the
    cluster.
    """
    from kfp import local

    root = workdir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root / "artifacts"),
        raise_on_error=True,
    )
    pipe = build_pipeline(Deployment(retries=0), default_params_text(params))
    start = time.perf_counter()
    with warnings.catch_warnings():  # "non-Python base image": our image is this venv here
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        task = pipe(
            overrides=LOCAL_FAST + overrides,
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
            work_dir=str(root / "work"),
        )
    seconds = time.perf_counter() - start
    outputs = dict(task.outputs)
    return {"root": root, "outputs": outputs, "seconds": seconds, "names": _display_names(pipe)}


def _display_names(pipe: Any) -> dict[str, str]:
    """Task key in the IR (the local folder name, e.g. ``promote-2``) -> its display name."""
    spec = pipe.pipeline_spec
    dags = [spec.root.dag, *(c.dag for c in spec.components.values() if c.HasField("dag"))]
    return {key: t.task_info.name for dag in dags for key, t in dag.tasks.items()}


def _artefacts(root: Path, names: dict[str, str]) -> list[tuple[str, Path]]:
    """``(step/output, path)`` for every artefact of the newest local run."""
    runs = sorted((root / "artifacts").glob("cyclegan-*"), key=lambda p: p.stat().st_mtime)
    if not runs:
        return []
    found = [p for p in runs[-1].glob("*/*") if p.name != "executor_output.json"]
    return sorted((f"{names.get(p.parent.name, p.parent.name)}/{p.name}", p) for p in found)


def run_local_cmd(args: argparse.Namespace) -> int:
    if not args.local:
        raise PipelineError("run: only --local is supported here; use `submit --host URL`")
    for o in args.set:
        parse_override(o)  # a malformed --set fails here, before any step runs
    try:
        res = run_local(Path(args.workdir), args.set, args.params)
    except RuntimeError as e:  # kfp.local: "Pipeline ... finished with status FAILURE. ..."
        print(f"error: {e} (the step's own error is in the log above)", file=sys.stderr)
        return 1
    print(f"\npipeline finished in {res['seconds']:.0f}s; artefacts:")
    for name, path in _artefacts(res["root"], res["names"]):
        print(f"  {name:32s} {path}")
    out = res["outputs"]
    print(f"MLflow store: {res['root'] / 'mlflow.db'}")
    print(f"registered version: {out['registered_version']}")
    decision = "accepted" if out["promotion_accepted"] else "refused by the gates"
    print(f"promotion: {decision}; @champion is {_champion(res['root'])}")
    return 0


def _champion(root: Path) -> str:
    """What the registry says after the run (not what the pipeline meant to do)."""
    import mlflow

    from cyclegan.config import config_from_yaml

    name = config_from_yaml(default_params_text()).tracking.registered_model
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    try:
        return f"version {client.get_model_version_by_alias(name, 'champion').version}"
    except mlflow.exceptions.MlflowException:
        return "not set"


def submit(args: argparse.Namespace) -> int:
    import kfp

    overrides = list(args.set)
    for o in overrides:
        parse_override(o)  # a malformed --set fails here, not in the cluster
    warnings.filterwarnings("ignore", message="This client only works with", category=FutureWarning)
    try:
        client = kfp.Client(host=args.host, namespace=args.namespace)
        client.get_kfp_healthz(sleep_duration=2)
    except (
        Exception
    ) as e:  # kfp raises urllib3/requests/ApiException types; all mean "cannot reach"
        raise PipelineError(
            f"cannot reach Kubeflow Pipelines at {args.host}: {type(e).__name__}: {e}. "
            "Check --host (e.g. http://localhost:8080 after "
            "`kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80`)"
        ) from e
    arguments: dict[str, Any] = {"overrides": overrides}
    if args.nodes is not None:
        arguments["train_nodes"] = args.nodes
    run = client.create_run_from_pipeline_func(
        _pipeline(args),
        arguments=arguments,
        run_name=args.run_name,
        experiment_name=args.experiment,
        namespace=args.namespace,
        service_account=args.service_account,
        # enable_caching stays None: any value would override every task's own setting
        # (training is never cached)
    )
    print(f"submitted run {run.run_id} to {args.host} (experiment {args.experiment})")
    return 0


def _deploy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default=None, help="params file for defaults (./params.yaml)")
    p.add_argument("--image", default=None, help="project image (registry/name:tag)")
    p.add_argument("--pvc", default=None, help="PVC for data and checkpoints (cyclegan-work)")
    p.add_argument("--tracking-uri", default=None, help="MLflow server URL as seen in the cluster")
    p.add_argument("--accelerator", default=None, help="GPU resource name ('' = CPU only)")
    p.add_argument("--step-gpus", type=int, default=None, help="GPUs of the train step's pod")
    p.add_argument("--gpus-per-node", type=int, default=None, help="GPUs per TrainJob node")
    p.add_argument(
        "--gpu-node-selector",
        default=None,
        metavar="LABEL=VALUE",
        help="node label picking the GPU model, e.g. nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compile", help="write the pipeline IR YAML")
    p.add_argument("--output", required=True)
    _deploy_args(p)
    p.set_defaults(func=compile_pipeline)

    p = sub.add_parser("run", help="run the whole pipeline here (kfp.local, no Docker)")
    p.add_argument("--local", action="store_true", required=True)
    p.add_argument("--workdir", default="kfp-local", help="artefacts, MLflow store, work volume")
    p.add_argument("--params", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=run_local_cmd)

    p = sub.add_parser("submit", help="submit a run to a Kubeflow Pipelines endpoint")
    p.add_argument("--host", required=True, help="KFP API URL, e.g. http://localhost:8080")
    p.add_argument("--experiment", default="cyclegan")
    p.add_argument("--run-name", default=None)
    p.add_argument("--namespace", default=None, help="Kubeflow profile namespace (multi-user)")
    p.add_argument("--service-account", default="cyclegan-pipeline")
    p.add_argument("--nodes", type=int, default=None, help="training nodes (train.nodes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _deploy_args(p)
    p.set_defaults(func=submit)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, PipelineError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
