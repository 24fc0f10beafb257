"""Where one CycleGAN iteration spends its time: torch.profiler over ``CycleGAN.train_step``.

    python benchmarks/profile_step.py --size 256 --amp bf16          # top ops, self CPU time
    python benchmarks/profile_step.py --size 128 --amp none --rows 25

Groups the ops into convolution, normalisation, padding, casts, optimiser and the rest, so the
share of non-convolution time (what bf16 does not speed up) is one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import _config

GROUPS = {
    "convolution": ("conv", "mkldnn_convolution", "slow_conv", "thnn_conv"),
    "instance_norm": ("instance_norm", "batch_norm", "native_batch_norm", "_batch_norm"),
    "reflection_pad": ("reflection_pad",),
    "casts": ("aten::to", "aten::_to_copy", "aten::copy_"),
    "optimiser": ("adam", "_foreach", "addcdiv", "lerp"),
}


def group(name: str) -> str:
    low = name.lower()
    for g, keys in GROUPS.items():
        if any(k in low for k in keys):
            return g
    return "other"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generator", default="resnet_9blocks")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="bf16")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", type=int, default=15)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    args.compile, args.device = False, "cpu"
    from torch.profiler import ProfilerActivity, profile

    from cyclegan.training import distributed
    from cyclegan.training.step import CycleGAN

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = CycleGAN(_config(args), distributed.setup("cpu"))
    shape = (args.batch, 3, args.size, args.size)
    a, b = torch.rand(shape) * 2 - 1, torch.rand(shape) * 2 - 1
    model.train_step(a, b)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.train_step(a, b)
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    shares: dict[str, float] = {}
    for e in events:
        shares[group(e.key)] = shares.get(group(e.key), 0.0) + e.self_cpu_time_total / 1e6
    total = sum(shares.values())
    line = ", ".join(f"{k} {v:.2f}s ({v / total:.0%})" for k, v in sorted(shares.items()))
    print(f"self CPU time by group ({args.amp}, {args.size}px, {args.threads} threads): {line}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "seconds": shares}, indent=1))


if __name__ == "__main__":
    main()
