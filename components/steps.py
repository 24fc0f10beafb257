"""The pipeline's steps as plain functions, each a thin call of the library step the CLI and the
DVC stages call. :func:`components.build` turns them into KFP v2 components on the project image.

KFP serialises each function's source into the component, so everything a step uses is imported
inside it from the installed ``cyclegan`` package (the image has it; locally, the venv does).
``config`` is the effective ``params.yaml`` (YAML text made by :func:`configure`); each step only
points the config's paths at its artefacts.
"""

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output


def configure(
    params: str,
    overrides: list,
    data_source: str,
    train_steps: int,
    train_batch_size: int,
    train_nodes: int,
    tracking_uri: str,
) -> str:
    """Validate params + overrides once, before any work; every step reads this config. The typed
    pipeline parameters come first, so free ``overrides`` win."""
    from cyclegan.config import config_from_yaml, config_to_yaml

    typed = [f"data.source={data_source}", f"train.steps={train_steps}"]
    typed += [f"train.batch_size={train_batch_size}", f"train.nodes={train_nodes}"]
    typed += [f"tracking.uri={tracking_uri}"]
    return config_to_yaml(config_from_yaml(params, typed + list(overrides)))


def data(config: str, raw: Output[Dataset]):
    """``cyclegan data fetch``: synthesize or import into the raw dataset artefact."""
    from cyclegan.config import config_from_yaml
    from cyclegan.data.ingest import ingest

    res = ingest(config_from_yaml(config, [f"data.raw_dir={raw.path}"]), progress=False)
    raw.metadata.update({"source": res.source, **res.counts})
    print(res.summary())


def preprocess(config: str, raw: Input[Dataset], processed: Output[Dataset]):
    """``cyclegan preprocess``: validated, resized RGB dataset plus manifest."""
    from cyclegan.config import config_from_yaml
    from cyclegan.preprocess import preprocess

    paths = [f"data.raw_dir={raw.path}", f"data.processed_dir={processed.path}"]
    print(preprocess(config_from_yaml(config, paths)).summary())


def train(
    config: str,
    processed: Input[Dataset],
    run: Output[Model],
    work_dir: str,
    run_id: str,
    image: str,
    gpus_per_node: int,
    gpu_node_selector: dict,
    pvc: str,
):
    """``cyclegan train`` in this pod, or a multi-node TrainJob when ``train.nodes > 1``; the run
    folder (checkpoints, samples, MLflow run id) lives on the shared volume so retries resume."""
    from cyclegan.config import config_from_yaml
    from cyclegan.k8s_trainjob import publish_run, train_on_cluster
    from cyclegan.train import train

    out = f"{work_dir}/{run_id}/train"
    cfg = config_from_yaml(config, [f"data.processed_dir={processed.path}", f"train.out_dir={out}"])
    if cfg.train.nodes > 1:
        train_on_cluster(
            cfg,
            image=image,
            run_id=run_id,
            mount_path=work_dir,
            pvc=pvc,
            gpus_per_node=gpus_per_node,
            node_selector=gpu_node_selector,
        )
    else:
        print(train(cfg).summary())
    publish_run(out, run.path)


def evaluate(
    config: str,
    processed: Input[Dataset],
    run: Input[Model],
    scores: Output[Metrics],
    eval_dir: Output[Artifact],
    report: Output[HTML],
):
    """``cyclegan evaluate`` on the trained run: metrics for the UI, the HTML report artefact."""
    import shutil

    from cyclegan.config import config_from_yaml, flatten
    from cyclegan.evaluate import evaluate

    paths = [f"data.processed_dir={processed.path}", f"train.out_dir={run.path}"]
    paths += [f"evaluate.out_dir={eval_dir.path}", f"evaluate.report_dir={eval_dir.path}/report"]
    res = evaluate(config_from_yaml(config, paths))
    for key, value in flatten(res.metrics).items():
        if isinstance(value, int | float):
            scores.log_metric(key, value)
    shutil.copy(res.paths["html"], report.path)
    print(res.summary())


def export(config: str, processed: Input[Dataset], run: Input[Model], onnx: Output[Model]):
    """``cyclegan export``: ONNX per direction, gated on ONNX Runtime vs PyTorch parity."""
    from cyclegan.config import config_from_yaml
    from cyclegan.export import export

    paths = [f"data.processed_dir={processed.path}", f"train.out_dir={run.path}"]
    paths += [f"export.out_dir={onnx.path}", f"export.metrics_file={onnx.path}/metrics.json"]
    res = export(config_from_yaml(config, paths))
    onnx.metadata.update({"step": res.step, "opset": res.opset})
    print(res.summary())


def register(
    config: str,
    processed: Input[Dataset],
    run: Input[Model],
    eval_dir: Input[Artifact],
    onnx: Input[Model],
    card: Output[Markdown],
) -> str:
    """``cyclegan register``: a new registry version of the candidate (idempotent)."""
    from cyclegan.config import config_from_yaml
    from cyclegan.register import register

    paths = [f"data.processed_dir={processed.path}", f"train.out_dir={run.path}"]
    paths += [f"evaluate.out_dir={eval_dir.path}", f"export.out_dir={onnx.path}"]
    res = register(config_from_yaml(config, paths), onnx_dir=onnx.path)
    with open(card.path, "w") as f:
        f.write(f"# Registered `{res.name}` version {res.version}\n\n```\n{res.summary()}\n```\n")
    print(res.summary())
    return str(res.version)


def promote(config: str, version: str, dry_run: bool, decision: Output[Markdown]) -> bool:
    """``cyclegan promote``: gates vs ``@champion``; a dry run decides and moves no alias.

    Returns ``accepted`` as the task's single output: kfp.local resolves a ``dsl.If`` condition
    on a task's ``Output`` only (not on a named output), and the cluster does either."""
    from cyclegan.config import config_from_yaml
    from cyclegan.promote import promote

    res = promote(config_from_yaml(config), version=version, dry_run=dry_run)
    with open(decision.path, "w") as f:
        f.write(f"# Promotion of version {version}: {'ACCEPTED' if res.accepted else 'REFUSED'}")
        f.write(f"{' (dry run)' if dry_run else ''}\n\n```\n{res.summary()}\n```\n")
    print(res.summary())
    return res.accepted
