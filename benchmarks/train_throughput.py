"""Training throughput: images/s, s/iteration, peak memory and FLOPs for one CycleGAN iteration.

One configuration per process (so the peak resident set is honest):

    python benchmarks/train_throughput.py --generator resnet_9blocks --size 256 --batch 1
    python benchmarks/train_throughput.py --size 128 --amp bf16 --channels-last
    python benchmarks/train_throughput.py --nproc 2 --size 128        # DDP (gloo) via torchrun
    python benchmarks/train_throughput.py --sweep --size 128           # fp32 / bf16 / bf16+CL table
    python benchmarks/train_throughput.py --sweep --variants none,none+compile,bf16 --size 64

Every sweep row is also given as a speed ratio to the project's fp32 eager step measured in the
same run (the first variant is always fp32 eager), with the CPU model and thread count, so
figures travel between machines. ``first_s`` is the first iteration (compile time included).

The iteration is the project's real ``CycleGAN.train_step`` (G update, then D update, history
pool, identity loss) on random images, so data loading is not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch


def _config(args: argparse.Namespace) -> Any:
    from cyclegan.config import config_from_dict

    return config_from_dict(
        {
            "model": {
                "generator": args.generator,
                "discriminator": "patchgan",
                "ngf": args.ngf,
                "ndf": args.ndf,
            },
            "loss": {"gan_mode": "lsgan"},
            "train": {
                "batch_size": args.batch,
                "amp": args.amp,
                "channels_last": args.channels_last,
                "compile": args.compile,
                "steps": 10_000,
                "device": args.device,
            },
        }
    )


def count_flops(model: Any, a: torch.Tensor, b: torch.Tensor) -> int:
    """FLOPs of one full train_step (forward + backward of all nets), torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model.train_step(a, b)
    return int(counter.get_total_flops())


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from cyclegan.training import distributed
    from cyclegan.training.precision import cpu_model
    from cyclegan.training.step import CycleGAN

    if args.threads:
        torch.set_num_threads(args.threads)
    info = distributed.setup(args.device)
    torch.manual_seed(0)
    cfg = _config(args)
    model = CycleGAN(cfg, info)
    shape = (args.batch, 3, args.size, args.size)
    a, b = torch.rand(shape) * 2 - 1, torch.rand(shape) * 2 - 1
    flops = count_flops(model, a, b) if not args.no_flops else 0
    t0 = time.perf_counter()
    model.train_step(a, b)  # first call: kernel selection, torch.compile's compilation
    first_s = time.perf_counter() - t0
    for _ in range(args.warmup - 1):
        model.train_step(a, b)
    times = []
    for _ in range(args.steps):
        if info.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.train_step(a, b)
        if info.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    distributed.barrier(info)
    med = statistics.median(times)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # GiB (Linux: KiB)
    out = {
        "generator": args.generator,
        "size": args.size,
        "batch_per_process": args.batch,
        "world_size": info.world_size,
        "amp": args.amp,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "threads": torch.get_num_threads(),
        "device": str(info.device),
        "median_s_per_iter": med,
        "first_s": first_s,
        "cpu": cpu_model(),
        "min_s_per_iter": min(times),
        "images_per_s": args.batch * info.world_size / med,
        "peak_rss_gib": peak_rss,
        "flops_per_iter": flops * info.world_size,
        "gflops_per_s": flops * info.world_size / med / 1e9 if flops else None,
        "torch": torch.__version__,
        "steps": args.steps,
    }
    if info.device.type == "cuda":
        out["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 1024**3
    distributed.cleanup()
    return out


def _row(r: dict[str, Any], fp32_s: float | None = None) -> str:
    prec = r["amp"] + (" + channels_last" if r["channels_last"] else "")
    prec += " + compile" if r.get("compile") else ""
    g = f"{r['gflops_per_s']:.0f}" if r.get("gflops_per_s") else "-"
    ratio = f"{fp32_s / r['median_s_per_iter']:.2f}x" if fp32_s else "-"
    return (
        f"| {r['generator']} | {r['size']} | {r['batch_per_process']}x{r['world_size']} | "
        f"{prec} | {r['median_s_per_iter']:.3f} | {ratio} | {r.get('first_s', 0):.1f} | "
        f"{r['images_per_s']:.2f} | {r['flops_per_iter'] / 1e12:.3f} | {g} | "
        f"{r['peak_rss_gib']:.2f} |"
    )


HEADER = (
    "| generator | size | batch×procs | precision | s/iter (median) | vs fp32 eager | first s | "
    "images/s | TFLOP/iter | GFLOP/s | peak RSS GiB |\n" + "|---" * 11 + "|"
)


def _child(args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    base = [
        sys.executable,
        __file__,
        "--generator",
        args.generator,
        "--size",
        str(args.size),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--ngf",
        str(args.ngf),
        "--ndf",
        str(args.ndf),
        "--json",
        "-",
    ]
    if args.threads:
        base += ["--threads", str(args.threads)]
    out = subprocess.run(base + extra, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generator", default="resnet_9blocks")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=1, help="per process")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--steps", type=int, default=5, help="timed iterations")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-flops", action="store_true")
    p.add_argument("--nproc", type=int, default=1, help="DDP processes (torchrun, gloo on CPU)")
    p.add_argument("--sweep", action="store_true", help="one process per --variants entry")
    p.add_argument(
        "--variants",
        default="none,bf16,bf16+cl",
        help="sweep entries: amp[+cl][+compile]; fp32 eager is always measured first",
    )
    p.add_argument("--json", default=None, help="write the result(s) here ('-' = stdout)")
    args = p.parse_args()

    if args.sweep:
        variants = ["none"] + [v for v in args.variants.split(",") if v and v != "none"]
        rows = []
        for v in variants:
            parts = v.split("+")
            extra = ["--amp", parts[0]] + ["--channels-last"] * ("cl" in parts)
            rows.append(_child(args, extra + ["--compile"] * ("compile" in parts)))
        fp32 = rows[0]["median_s_per_iter"]
        print(f"CPU: {rows[0]['cpu']}; {rows[0]['threads']} threads; load {os.getloadavg()}")
        print(HEADER)
        print("\n".join(_row(r, fp32) for r in rows))
        if args.json and args.json != "-":
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return
    if args.nproc > 1 and "RANK" not in os.environ:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(args.nproc),
            "--standalone",
            __file__,
            *[a for a in sys.argv[1:] if a not in ("--nproc", str(args.nproc))],
        ]
        sys.exit(subprocess.call(cmd))
    result = measure(args)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if args.json == "-":
        print(json.dumps(result))
    else:
        print(HEADER)
        print(_row(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
