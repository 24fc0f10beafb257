"""``cyclegan`` command line: thin wrappers that parse arguments and call one step function.

Every step takes ``--params FILE`` (default ``params.yaml`` when present) and repeated
``--set dotted.key=value`` overrides, the same spelling as ``dvc exp run -S``. Errors the user
can fix (bad params, bad data, missing weights) print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from cyclegan.config import Config, ConfigError, load_config


def _config(args: argparse.Namespace) -> Config:
    params = args.params
    if params is None and Path("params.yaml").is_file():
        params = "params.yaml"
    return load_config(params, args.set)


def _add_params(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default=None, help="params file (default: ./params.yaml if present)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param, e.g. --set train.steps=100 (repeatable)",
    )


# --- handlers: each imports its step lazily so `cyclegan --help` stays fast ----------------


def _data_synth(args: argparse.Namespace) -> int:
    from cyclegan.data.synth import synthesize

    res = synthesize(
        Path(args.out),
        train=args.train,
        test=args.test,
        size=args.size,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(res.summary())
    return 0


def _data_import(args: argparse.Namespace) -> int:
    from cyclegan.data.importer import import_dataset

    res = import_dataset(args.src, Path(args.out), overwrite=args.overwrite)
    print(res.summary())
    return 0


def _data_validate(args: argparse.Namespace) -> int:
    from cyclegan.data.validate import validate_dataset

    cfg = _config(args)
    report = validate_dataset(Path(args.dir), cfg.data)
    if args.json:
        report.write_json(Path(args.json))
    print(report.summary())
    return 0 if report.ok else 1


def _data_fetch(args: argparse.Namespace) -> int:
    from cyclegan.data.ingest import ingest

    res = ingest(_config(args))
    print(res.summary())
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    from cyclegan.preprocess import preprocess

    res = preprocess(_config(args))
    print(res.summary())
    return 0


def _train(args: argparse.Namespace) -> int:
    from cyclegan.train import train

    res = train(_config(args))
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone reports
        print(res.summary())
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from cyclegan.evaluate import evaluate

    if args.require_weights:
        args.set.append("evaluate.require_weights=true")
    res = evaluate(_config(args), model=args.model, data=args.data)
    print(res.summary())
    return 0


def _export(args: argparse.Namespace) -> int:
    from cyclegan.export import export

    res = export(_config(args), checkpoint=args.checkpoint, out_dir=args.out_dir)
    print(res.summary())
    return 0


def _register(args: argparse.Namespace) -> int:
    from cyclegan.register import register
    from cyclegan.storage import atomic_write_bytes

    res = register(_config(args), checkpoint=args.checkpoint, onnx_dir=args.onnx_dir)
    if args.json:
        doc = {k: v for k, v in res.to_dict().items() if k != "tags"}
        atomic_write_bytes(Path(args.json), (json.dumps(doc, indent=2) + "\n").encode())
    print(res.summary())
    return 0


def _promote(args: argparse.Namespace) -> int:
    """Exit 0 when accepted, 1 when refused (the table says why), 2 on bad input."""
    from cyclegan.promote import promote

    res = promote(_config(args), model=args.model, version=args.version, dry_run=args.dry_run)
    print(json.dumps(res.to_dict(), indent=2) if args.json else res.summary())
    return 0 if res.accepted else 1


def _rollback(args: argparse.Namespace) -> int:
    from cyclegan.promote import rollback

    res = rollback(_config(args), model=args.model)
    print(json.dumps(res.to_dict(), indent=2) if args.json else res.summary())
    return 0


def _lineage(args: argparse.Namespace) -> int:
    from cyclegan.lineage import lineage

    res = lineage(_config(args), args.uri)
    print(json.dumps(res.to_dict(), indent=2, default=str) if args.json else res.summary())
    return 0


def _translate(args: argparse.Namespace) -> int:
    """Exit 0 when every image was written or skipped, 1 when some failed, 2 on bad input."""
    from cyclegan.translate import translate

    res = translate(
        args.input,
        Path(args.output),
        model=args.model,
        direction=args.direction,
        backend=args.backend,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        threads=args.threads,
    )
    print(res.summary())
    return 0 if not res.failed else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cyclegan", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="create, import and validate datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)

    p = dsub.add_parser("synth", help="procedural synthetic benchmark with ground truth")
    p.add_argument("out")
    p.add_argument("--train", type=int, default=200, help="images per training domain")
    p.add_argument("--test", type=int, default=40, help="images per test domain")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=_data_synth)

    p = dsub.add_parser("import", help="import a dataset from a folder, archive, s3:// or URL")
    p.add_argument("src", help="folder, .zip/.tar.gz, s3://bucket/prefix, URL or a name")
    p.add_argument("out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=_data_import)

    p = dsub.add_parser("validate", help="report counts, sizes, bad files and leakage")
    p.add_argument("dir")
    p.add_argument("--json", default=None, help="also write the report as JSON here")
    _add_params(p)
    p.set_defaults(func=_data_validate)

    p = dsub.add_parser("fetch", help="the DVC data stage: synth or import per params")
    _add_params(p)
    p.set_defaults(func=_data_fetch)

    p = sub.add_parser("preprocess", help="validated, resized RGB dataset + manifest")
    _add_params(p)
    p.set_defaults(func=_preprocess)

    p = sub.add_parser("train", help="train (single process or under torchrun)")
    _add_params(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="FID/KID/LPIPS and weight-free metrics")
    p.add_argument("--model", default=None, help="checkpoint (.pt) or ONNX folder (default: best)")
    p.add_argument("--data", default=None, help="dataset root (default: data.processed_dir)")
    p.add_argument(
        "--require-weights",
        action="store_true",
        help="fail (exit 2) instead of skipping FID/KID/LPIPS when their weight files are missing"
        " (same as --set evaluate.require_weights=true)",
    )
    _add_params(p)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("export", help="ONNX export with a parity gate")
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: best, else last)")
    p.add_argument("--out-dir", default=None, help="default: export.out_dir")
    _add_params(p)
    p.set_defaults(func=_export)

    p = sub.add_parser("register", help="register the exported model (+ evidence) in MLflow")
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: best, else last)")
    p.add_argument("--onnx-dir", default=None, help="default: export.out_dir")
    p.add_argument("--json", default=None, help="also write the result here (DVC output)")
    _add_params(p)
    p.set_defaults(func=_register)

    for name, helptext, func in [
        ("promote", "move @champion to a version that passes promote.gates", _promote),
        ("rollback", "move @champion back to @previous", _rollback),
    ]:
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--model", default=None, help="default: tracking.registered_model")
        if name == "promote":
            p.add_argument("--version", default=None, help="default: the @challenger version")
            p.add_argument("--dry-run", action="store_true", help="decide, change nothing")
        p.add_argument("--json", action="store_true", help="print the decision as JSON")
        _add_params(p)
        p.set_defaults(func=func)

    p = sub.add_parser("lineage", help="version -> runs -> params -> commit -> data")
    p.add_argument("uri", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    p.add_argument("--json", action="store_true", help="print the chain as JSON")
    _add_params(p)
    p.set_defaults(func=_lineage)

    p = sub.add_parser("translate", help="translate a file, folder or glob")
    p.add_argument("input", help="image file, folder or glob")
    p.add_argument("output", help="output folder (or file, for a single input)")
    p.add_argument(
        "--model",
        default="models/onnx",
        help="onnx: folder with generator_<dir>.onnx or a .onnx file; torch: a .pt or run folder",
    )
    p.add_argument("--direction", choices=["AtoB", "BtoA"], default="AtoB")
    p.add_argument("--backend", choices=["onnx", "torch"], default="onnx")
    p.add_argument("--batch-size", type=int, default=4, help="images per run (same size only)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = runtime default)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=_translate)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean 'fix your input', printed without a traceback."""
    errors: list[type[BaseException]] = [ConfigError, FileNotFoundError]
    for mod, name in [
        ("cyclegan.storage", "StorageError"),
        ("cyclegan.data.errors", "DataError"),
        ("cyclegan.tracking", "TrackingError"),
        ("cyclegan.training.checkpoint", "CheckpointError"),
        ("cyclegan.evaluation.weights", "WeightsError"),
        ("cyclegan.export", "ExportError"),
        ("cyclegan.evaluation.errors", "EvalError"),
        ("cyclegan.models.onnx_generator", "OnnxModelError"),
        ("cyclegan.translate", "TranslateError"),
        ("cyclegan.register", "RegisterError"),
        ("cyclegan.promote", "PromotionError"),
    ]:
        module = sys.modules.get(mod)
        if module is not None and hasattr(module, name):
            errors.append(getattr(module, name))
    return tuple(errors)


def _setup_logging() -> None:
    rank = os.environ.get("RANK")
    prefix = f"[rank {rank}] " if rank is not None else ""
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s {prefix}%(name)s: %(message)s")
    for noisy in ("alembic", "mlflow", "urllib3", "botocore", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except _user_errors() as e:  # evaluated after the step ran, so its error types are loaded
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
