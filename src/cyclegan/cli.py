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

    res = import_dataset(args.src, Path(args.out), overwrite=args.overwrite, cfg=_config(args).data)
    print(res.summary())
    return 0


def _data_validate(args: argparse.Namespace) -> int:
    cfg = _config(args)  # bad params fail before the step's (heavy) imports
    from cyclegan.data.channels import split_channels
    from cyclegan.data.validate import validate_dataset

    report = validate_dataset(Path(args.dir), cfg.data, channels=split_channels(cfg.model))
    print(report.summary())  # first: an unwritable --json path must not cost the user the report
    if args.json:
        report.write_json(Path(args.json))
    return 0 if report.ok else 1


def _data_fetch(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from cyclegan.data.ingest import ingest

    res = ingest(cfg, overwrite=args.overwrite)
    print(res.summary())
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from cyclegan.preprocess import preprocess

    res = preprocess(cfg)
    print(res.summary())
    return 0


def _train(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from cyclegan.data.trainset import check_train_data

    data = check_train_data(cfg)  # bad data fails in a second, before torch loads
    from cyclegan.train import train

    res = train(cfg, data=data)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone reports
        print(res.summary())
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if args.require_weights:
        args.set.append("evaluate.require_weights=true")
    cfg = _config(args)
    from cyclegan.evaluate import evaluate

    res = evaluate(cfg, model=args.model, data=args.data)
    print(res.summary())
    return 0


def _export(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from cyclegan.export import export

    res = export(cfg, checkpoint=args.checkpoint, out_dir=args.out_dir)
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


def _import_checkpoint(args: argparse.Namespace) -> int:
    from cyclegan.import_checkpoint import import_checkpoint

    domains = tuple(args.domains.split(",")) if args.domains else None
    if domains is not None and len(domains) != 2:
        raise ConfigError(f"--domains: expected A_NAME,B_NAME, got {args.domains!r}")
    res = import_checkpoint(
        args.src,
        Path(args.out),
        args.format,
        base=_config(args),
        direction=args.direction,
        domains=domains,  # type: ignore[arg-type]
        overwrite=args.overwrite,
    )
    print(res.summary())
    return 0


def _tracking_sync(args: argparse.Namespace) -> int:
    from cyclegan.tracking_buffer import sync

    print(sync(Path(args.run_dir), uri=args.uri).summary())
    return 0


def _doctor(args: argparse.Namespace) -> int:
    """Exit 1 when something the current params require is missing or unreachable."""
    from cyclegan.doctor import doctor

    report = doctor(_config(args))
    if args.json:
        print(report.to_json())
    else:
        report.print_table()
    return 0 if report.ok else 1


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
    _add_params(p)  # data.max_expansion_ratio / data.max_extract_bytes: the archive-bomb guard
    p.set_defaults(func=_data_import)

    p = dsub.add_parser("validate", help="report counts, sizes, bad files and leakage")
    p.add_argument("dir")
    p.add_argument("--json", default=None, help="also write the report as JSON here")
    _add_params(p)
    p.set_defaults(func=_data_validate)

    p = dsub.add_parser("fetch", help="the DVC data stage: synth or import per params")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty data.raw_dir that an earlier fetch did not write",
    )
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

    p = sub.add_parser(
        "import-checkpoint", help="published CycleGAN generators -> a checkpoint of ours"
    )
    p.add_argument(
        "src",
        nargs="+",
        help="file(s), folder, s3:// URI, URL or a reference model name (horse2zebra, ...)",
    )
    p.add_argument("out", help="the checkpoint to write (.pt)")
    p.add_argument("--format", choices=["reference", "mmagic"], default="reference")
    p.add_argument(
        "--direction",
        choices=["AtoB", "BtoA"],
        default="AtoB",
        help="the direction of a single-generator file (latest_net_G.pth)",
    )
    p.add_argument("--domains", default=None, help="mmagic: A_NAME,B_NAME (default: key order)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    _add_params(p)
    p.set_defaults(func=_import_checkpoint)

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

    p = sub.add_parser("tracking", help="MLflow tracking utilities")
    tsub = p.add_subparsers(dest="tracking_command", required=True)
    p = tsub.add_parser("sync", help="upload a run's records buffered while the server was away")
    p.add_argument("run_dir", help="the training run folder (train.out_dir)")
    p.add_argument("--uri", default=None, help="tracking URI (default: the one the run used)")
    p.set_defaults(func=_tracking_sync)

    p = sub.add_parser("doctor", help="check servers, stores, credentials, weights and device")
    p.add_argument("--json", action="store_true", help="one JSON object, a key per section")
    _add_params(p)
    p.set_defaults(func=_doctor)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean 'fix your input', printed without a traceback."""
    # OSError: a path the user gave is missing, unwritable, a folder, or the disk is full
    errors: list[type[BaseException]] = [ConfigError, OSError]
    for mod, name in [
        ("cyclegan.storage", "StorageError"),
        ("cyclegan.data.errors", "DataError"),
        ("cyclegan.tracking", "TrackingError"),
        ("cyclegan.training.checkpoint", "CheckpointError"),
        ("cyclegan.weightfiles", "WeightsError"),
        ("cyclegan.import_checkpoint", "ImportCheckpointError"),
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


def _internal_error(e: BaseException) -> int:
    """Last resort: a bug (not bad input) prints one line and where the traceback went, exit 1.

    Exit 1, not 2: scripts and DVC still see a failure, and 2 keeps meaning "fix your input".
    The traceback goes to a file (a bug report needs it; users should not have to read it);
    ``CYCLEGAN_DEBUG=1`` prints it instead.
    """
    import tempfile
    import time
    import traceback

    if os.environ.get("CYCLEGAN_DEBUG"):
        traceback.print_exception(e)
        return 1
    detail = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    name = f"cyclegan-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    where = Path(tempfile.gettempdir()) / name
    try:
        where.write_text("".join(traceback.format_exception(e)))
        saved = f"the traceback is in {where}"
    except OSError:
        saved = "rerun with CYCLEGAN_DEBUG=1 for the traceback"
    print(
        f"error: internal error ({detail}). This is a bug in cyclegan, not in your input; "
        f"{saved} (please attach it to a bug report)",
        file=sys.stderr,
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except _user_errors() as e:  # evaluated after the step ran, so its error types are loaded
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # no raw traceback for users, ever
        return _internal_error(e)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
