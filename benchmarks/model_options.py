"""What each model option buys: parameters, FLOPs, speed and quality at a fixed step budget.

    OMP_NUM_THREADS=1 python benchmarks/model_options.py --steps 50 \
        --json benchmarks/model_options.json

Part 1, generators at the published size (ngf 64, 256×256, batch 1, eval mode): parameters,
GFLOP per forward (``torch.utils.flop_counter``) and median forward seconds.
Part 2, training on the synthetic benchmark (64 px, ngf/ndf 16, batch 4, the ``make run``
setting) for ``--steps`` iterations per option, one option at a time, same seed and data:
seconds per iteration (the project's ``train``; ratio to ``resnet_9blocks`` fp32 run first
*and* last in the same process, to expose drift on a shared machine) and the weight-free L1 to
ground truth of the final generators on the test split (lower is better; the identity
baseline is printed too). The perceptual loss runs on a VGG16 file with torchvision's layout and
random values (the real ImageNet file cannot be downloaded here), so its time is real and its
quality figure is not representative.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("resnet_9blocks (baseline)", "resnet_9blocks", {}),
    ("resnet_9blocks_ds", "resnet_9blocks_ds", {}),
    ("resnet_9blocks_attn", "resnet_9blocks_attn", {}),
    ("+ lambda_ssim=1", "resnet_9blocks", {"lambda_ssim": 1.0}),
    ("+ lambda_fft=1", "resnet_9blocks", {"lambda_fft": 1.0}),
    ("+ lambda_fm=10", "resnet_9blocks", {"lambda_fm": 10.0}),
    ("+ lambda_perceptual=1 (random VGG)", "resnet_9blocks", {"lambda_perceptual": 1.0}),
    ("resnet_9blocks (baseline, again)", "resnet_9blocks", {}),
]


def generator_stats(name: str, size: int, repeats: int) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    from cyclegan.config import ModelConfig
    from cyclegan.models import build_generator

    net = build_generator(ModelConfig(generator=name, ngf=64)).eval()
    x = torch.rand(1, 3, size, size) * 2 - 1
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            net(x)
        times = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    return {
        "generator": name,
        "params": sum(p.numel() for p in net.parameters()),
        "gflop": counter.get_total_flops() / 1e9,
        "s_forward": statistics.median(times[1:]),
    }


def train_option(root: Path, data: Path, generator: str, loss: dict, steps: int) -> dict:
    """``steps`` real ``train_step``s on the synthetic data; s/iter is the median step time
    (data loading and the loader's start-up excluded), L1 from the final generators."""
    from cyclegan.evaluation.quick import quick_score

    model, it_a, it_b = _prepared(root, data, generator, loss)
    times, losses = [], {}
    for _ in range(steps):
        a, b = next(it_a), next(it_b)
        t0 = time.perf_counter()
        losses = model.train_step(a, b)
        times.append(time.perf_counter() - t0)
    score = quick_score(model.g_ab, model.g_ba, data)
    return {
        "params_G": sum(p.numel() for p in model.g_ab.parameters()),
        "s_iter": statistics.median(times[1:] if steps > 1 else times),
        "l1_to_gt": score["l1_to_gt"],
        "losses": losses,
    }


def speed_pass(root: Path, data: Path, rounds: int, steps: int) -> dict[str, float]:
    """Median s/iter per option, the options interleaved round-robin in a rotating order
    (``rounds`` × ``steps`` timed steps each after one warm-up step), so load changes on a
    shared machine hit every option alike."""
    models, times = {}, {}
    for label, generator, loss in OPTIONS[:-1]:
        models[label] = _prepared(root, data, generator, loss)
        times[label] = []
    labels = list(models)
    for r in range(rounds):  # each round starts one option later: no option is always first
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            model, it_a, it_b = models[label]
            model.train_step(next(it_a), next(it_b))  # warm-up (oneDNN primitives, caches)
            for _ in range(steps):
                a, b = next(it_a), next(it_b)
                t0 = time.perf_counter()
                model.train_step(a, b)
                times[label].append(time.perf_counter() - t0)
    return {label: statistics.median(t) for label, t in times.items()}


def _prepared(root: Path, data: Path, generator: str, loss: dict) -> tuple:
    from cyclegan.config import config_from_dict
    from cyclegan.train import seed_everything
    from cyclegan.training.distributed import DistInfo
    from cyclegan.training.loader import domain_loader
    from cyclegan.training.step import CycleGAN

    cfg = config_from_dict(
        {
            "seed": 0,
            "data": {"processed_dir": str(data)},
            "transforms": {"load_size": 64, "crop_size": 64},
            "model": {"generator": generator, "ngf": 16, "ndf": 16},
            "loss": {**loss, "vgg_weights": str(root / "vgg16.pth")},
            "train": {"batch_size": 4, "out_dir": str(root / "run")},
            "tracking": {"enabled": False},
        }
    )
    info = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    seed_everything(cfg.seed)
    model = CycleGAN(cfg, info)
    return (
        model,
        domain_loader(cfg, info, "train", "A", 0),
        domain_loader(cfg, info, "train", "B", 0),
    )


def _write_vgg(path: Path) -> None:
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    feats = make_layers(cfgs["D"])
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--size", type=int, default=256, help="generator table input size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--speed-rounds", type=int, default=0, help="interleaved speed pass rounds")
    ap.add_argument("--speed-steps", type=int, default=3, help="timed steps per option per round")
    ap.add_argument("--skip-quality", action="store_true", help="only the speed pass")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a shared, oversubscribed machine 2 spinning OpenMP threads "
        "measured 24x slower per iteration)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from cyclegan.data.synth import synthesize

    result: dict[str, Any] = {}
    if args.json and Path(args.json).is_file():
        result = json.loads(Path(args.json).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = synthesize(root / "data", train=200, test=40, size=64, seed=0, progress=False).out
        _write_vgg(root / "vgg16.pth")
        if not args.skip_quality:
            result.update(_quality(root, data, args))
        if args.speed_rounds:
            speed = speed_pass(root, data, args.speed_rounds, args.speed_steps)
            ref = speed[OPTIONS[0][0]]
            print(f"\ninterleaved speed: {args.speed_rounds} rounds x {args.speed_steps} steps")
            print("| option | s/iter (median) | ratio to resnet_9blocks |")
            print("|---|---|---|")
            for label, t in speed.items():
                print(f"| {label} | {t:.3f} | {t / ref:.2f}× |")
            result["speed"] = speed
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _quality(root: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    from cyclegan.evaluation.quick import quick_score

    gens = [
        generator_stats(n, args.size, args.repeats)
        for n in ("resnet_9blocks", "resnet_9blocks_ds", "resnet_9blocks_attn")
    ]
    base = gens[0]
    print("| generator | params | GFLOP/forward | s/forward | vs resnet_9blocks (params/FLOP/s) |")
    print("|---|---|---|---|---|")
    for g in gens:
        print(
            f"| {g['generator']} | {g['params'] / 1e6:.2f} M | {g['gflop']:.1f} | "
            f"{g['s_forward']:.3f} | {g['params'] / base['params']:.2f}× / "
            f"{g['gflop'] / base['gflop']:.2f}× / {g['s_forward'] / base['s_forward']:.2f}× |"
        )
    sys.stdout.flush()
    ident = quick_score(torch.nn.Identity(), torch.nn.Identity(), data)["l1_to_gt"]
    rows = []
    for label, generator, loss in OPTIONS:
        r = train_option(root, data, generator, loss, args.steps)
        rows.append({"option": label, "generator": generator, "loss": loss, **r})
        print(f"{label}: {r['s_iter']:.3f} s/iter, L1 to GT {r['l1_to_gt']:.4f}", flush=True)
    ref = statistics.mean(r["s_iter"] for r in rows if r["option"].startswith("resnet_9blocks ("))
    print(f"\nidentity baseline L1 to GT: {ident:.4f}; {args.steps} steps, batch 4, 64 px")
    print("| option | G params | s/iter | ratio | L1 to GT |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['option']} | {r['params_G'] / 1e3:.0f} k | {r['s_iter']:.3f} | "
            f"{r['s_iter'] / ref:.2f}× | {r['l1_to_gt']:.4f} |"
        )
    return {"generators": gens, "training": rows, "identity_l1": ident, "steps": args.steps}


if __name__ == "__main__":
    sys.exit(main())
