"""Inference latency, throughput and peak memory: PyTorch eager vs ONNX Runtime fp32/fp16/int8.

    python benchmarks/inference.py                       # resnet_9blocks ngf=64, 256/512, batch 1/8
    python benchmarks/inference.py --sizes 256 --batches 1 --repeats 10
    python benchmarks/inference.py --quick               # seconds-long smoke run (make bench)

Random weights (speed does not depend on them); the generator and every ONNX file are built
once in a work folder, then each (backend, size, batch) runs in its own process so the peak
resident set (``VmHWM``) belongs to that configuration alone. ONNX Runtime workers import
onnxruntime and numpy only, never torch, as a serving process would. Each worker warms up with
one batch-1 call at the same size, then times up to ``--repeats`` calls or until
``--budget-s`` is spent (at least one). int8 quality is the mean |output - fp32 output| on real
photos when ``../shared`` has them (else random images), in 8-bit grey levels.

Writes JSON (``--out``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SUNFLOWER = ROOT.parent / "shared" / "datasets" / "sunflower2daisy" / "testA"
BACKENDS = ("torch", "ort-fp32", "ort-fp16", "ort-int8-dynamic", "ort-int8-static")


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_mb() -> float:
    """Peak RSS of this address space: VmHWM (ru_maxrss survives exec, so a worker spawned by
    a large parent would report the parent's peak)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _inputs(n: int, size: int, seed: int = 0, skip: int = 0) -> np.ndarray:
    """Real photos (resized; the first ``skip`` left out) when available, else random;
    float NCHW in [-1, 1]."""
    from PIL import Image

    photos = sorted(SUNFLOWER.glob("*.jpg"))[skip : skip + n] if SUNFLOWER.is_dir() else []
    if len(photos) == n:
        arr = np.stack(
            [np.asarray(Image.open(p).convert("RGB").resize((size, size))) for p in photos]
        )
    else:
        arr = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return arr.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0


def build(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The generator's weights and one ONNX file per ONNX backend, plus their quality cost."""
    import onnx
    import torch

    from cyclegan.config import ModelConfig
    from cyclegan.export import export_onnx, quantize_int8, to_fp16
    from cyclegan.models import build_generator

    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = build_generator(ModelConfig(generator=args.generator, ngf=args.ngf)).eval()
    torch.save(net.state_dict(), work / "generator.pt")
    fp32 = work / "ort-fp32.onnx"
    t = time.perf_counter()
    export_onnx(net, fp32, 18, {"generator": args.generator})
    export_s = time.perf_counter() - t
    onnx.save_model(to_fp16(onnx.load(str(fp32))), str(work / "ort-fp16.onnx"))
    calib = [_inputs(8, args.sizes[0], seed=1, skip=4)]  # not the 4 quality images
    quantize_int8(fp32, work / "ort-int8-dynamic.onnx", "dynamic", calib)
    quantize_int8(fp32, work / "ort-int8-static.onnx", "static", calib)
    return {"export_s": round(export_s, 1), "quality": quality(work, args.sizes[0])}


def quality(work: Path, size: int) -> dict[str, dict[str, float]]:
    """Mean / max |variant - fp32| on 4 images (8-bit levels: 1.0 = one grey level)."""
    import onnxruntime as ort

    x = _inputs(4, size)
    outs = {}
    for name in BACKENDS[1:]:
        sess = ort.InferenceSession(str(work / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        outs[name] = sess.run(None, {"input": x})[0].astype(np.float32)
    ref = outs["ort-fp32"]
    return {
        name: {
            "mean_abs_levels": round(float(np.abs(y - ref).mean() * 127.5), 3),
            "max_abs_levels": round(float(np.abs(y - ref).max() * 127.5), 1),
        }
        for name, y in outs.items()
        if name != "ort-fp32"
    }


def _runner(backend: str, work: Path, threads: int) -> Any:
    if backend == "torch":
        import torch

        from cyclegan.config import ModelConfig
        from cyclegan.models import build_generator

        torch.set_num_threads(threads)
        meta = json.loads((work / "build.json").read_text())
        net = build_generator(ModelConfig(generator=meta["generator"], ngf=meta["ngf"])).eval()
        net.load_state_dict(torch.load(work / "generator.pt", weights_only=True))

        def run(x: np.ndarray) -> Any:
            with torch.inference_mode():
                return net(torch.from_numpy(x)).numpy()

        return run
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(
        str(work / f"{backend}.onnx"), opts, providers=["CPUExecutionProvider"]
    )
    return lambda x: sess.run(None, {"input": x})[0]


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One (backend, size, batch) in this process: warm-up, timed calls, peak memory."""
    backend, size, batch, work = args.worker, args.size, args.batch, Path(args.work)
    base = _rss_mb()
    run = _runner(backend, work, args.threads)
    loaded = _rss_mb()
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
    run(x[:1])  # warm-up: allocations, kernel selection
    times: list[float] = []
    spent = 0.0
    while len(times) < args.repeats and (not times or spent + times[-1] <= args.budget_s):
        t = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t)
        spent += times[-1]
    med = statistics.median(times)
    return {
        "backend": backend,
        "size": size,
        "batch": batch,
        "repeats": len(times),
        "latency_ms": round(med * 1000, 1),
        "min_ms": round(min(times) * 1000, 1),
        "throughput_img_s": round(batch / med, 2),
        "peak_rss_mb": round(_peak_mb(), 1),
        "baseline_rss_mb": round(base, 1),
        "model_rss_mb": round(loaded - base, 1),
    }


def _spawn(args: argparse.Namespace, backend: str, size: int, batch: int) -> dict[str, Any]:
    cmd = [
        sys.executable, __file__, "--worker", backend, "--size", str(size), "--batch", str(batch),
        "--work", str(args.work), "--threads", str(args.threads), "--repeats", str(args.repeats),
        "--budget-s", str(args.budget_s),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
        return {"backend": backend, "size": size, "batch": batch, "error": tail[0]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per configuration, speed-up relative to eager PyTorch."""
    eager = {(r["size"], r["batch"]): r["latency_ms"] for r in rows if r["backend"] == "torch"}
    lines = [
        "| backend | size | batch | median ms | min ms | img/s | vs eager | peak RSS MB | runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['backend']} | {r['size']} | {r['batch']} | failed: {r['error']} |")
            continue
        base = eager.get((r["size"], r["batch"]))
        speed = f"{base / r['latency_ms']:.2f}x" if base else "-"
        lines.append(
            f"| {r['backend']} | {r['size']} | {r['batch']} | {r['latency_ms']:.1f} | "
            f"{r['min_ms']:.1f} | {r['throughput_img_s']:.2f} | {speed} | "
            f"{r['peak_rss_mb']:.0f} | {r['repeats']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generator", default="resnet_9blocks")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    p.add_argument("--repeats", type=int, default=5, help="timed calls per configuration (max)")
    p.add_argument("--budget-s", type=float, default=20.0, help="stop timing a config after this")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (both runtimes)")
    p.add_argument(
        "--work",
        default=str(Path(tempfile.gettempdir()) / "cyclegan-inference-bench"),
        help="the generator and ONNX files are built here",
    )
    p.add_argument("--out", default="benchmarks/inference.json")
    p.add_argument("--quick", action="store_true", help="resnet_6blocks ngf=16, 64 px, batch 1")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    if args.quick:
        args.generator, args.ngf, args.sizes, args.batches, args.repeats = (
            "resnet_6blocks", 16, [64], [1], 3,
        )  # fmt: skip
    work = Path(args.work)
    start = time.perf_counter()
    built = build(args, work)
    (work / "build.json").write_text(json.dumps({"generator": args.generator, "ngf": args.ngf}))
    rows = []
    for size in args.sizes:
        for batch in args.batches:
            for backend in args.backends:
                rows.append(_spawn(args, backend, size, batch))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    sizes = {b: (work / f"{b}.onnx").stat().st_size / 1e6 for b in BACKENDS[1:]}
    result = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_avg_at_end": [round(v, 2) for v in os.getloadavg()],
            "python": platform.python_version(),
        },
        "generator": args.generator,
        "ngf": args.ngf,
        "threads": args.threads,
        "file_mb": {k: round(v, 2) for k, v in sizes.items()},
        "seconds": round(time.perf_counter() - start, 1),
        **built,
        "rows": rows,
    }
    from cyclegan.tracking import library_versions

    result["versions"] = library_versions()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(rows))
    print(f"\nquality vs ort-fp32 (8-bit levels): {json.dumps(built['quality'])}")
    print(f"file MB: {json.dumps(result['file_mb'])}; wrote {args.out} in {result['seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
