"""Wall-clock time until the synthetic benchmark's A->B L1 to ground truth reaches a target.

    python benchmarks/time_to_quality.py                         # params.yaml as it is
    python benchmarks/time_to_quality.py --set train.batch_size=1 --set train.steps=1200
    python benchmarks/time_to_quality.py --target-gain 0.30 --eval-every 50 --json out.json
    python benchmarks/time_to_quality.py --full --eval-every 200 --seeds 0-9 --jobs 2 --json s.json

Trains with the project's own ``train(cfg)`` on the synthetic benchmark (built once in
``--data``, from ``data.synth`` of the params), scores A->B L1 to ground truth every
``--eval-every`` steps with the training-time quick score, and reports the training wall-clock
(scoring time excluded, checkpointing included) at which L1 first fell to the target: by default
30 % below the "every output is the mean target image" baseline. The run stops there unless
``--full``. Also prints the final sample grid path, to look at colours and stripes.

One seed can mislead: a run may settle on the wrong hue map (BENCHMARKS.md). ``--seeds`` trains
one run per seed (``--jobs`` at a time, each a process of this script with the machine's threads
shared out) and reports them side by side: how many learned the right map and met the aim.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


class _Reached(Exception):
    pass


def mean_target_l1(root: Path) -> float:
    """L1 of predicting the per-pixel mean trainB image for every testA ground truth."""
    from PIL import Image

    def load(paths: list[Path]) -> np.ndarray:
        return np.stack([np.asarray(Image.open(p).convert("RGB"), np.float64) / 255 for p in paths])

    mean_b = load(sorted((root / "trainB").glob("*.png"))).mean(0)
    gt = load(sorted((root / "testA_gt").glob("*.png")))
    return float(np.abs(gt - mean_b).mean())


def hue_maps(g_ab: Any, root: Path, n: int = 40) -> dict[str, float]:
    """A->B L1 to the ground truth (the +120 deg rotation) and to its hue *reflection*.

    The reflection h -> 240 - h is the wrong map unpaired training can settle on (see
    ``cyclegan.data.synth``). Its "ground truth" is testA_gt with G and B swapped inside the
    objects (rotation (r,g,b)->(b,r,g), reflection (r,g,b)->(b,g,r)); the background stays. The
    smaller of the two names the map a run learned, without looking at sample grids.
    """
    import torch
    from PIL import Image

    from cyclegan.data.synth import BG_B

    names = sorted(p.name for p in (root / "testA").glob("*.png"))[:n]

    def load(folder: str) -> np.ndarray:
        return np.stack([np.asarray(Image.open(root / folder / f).convert("RGB")) for f in names])

    x = torch.from_numpy(load("testA")).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.inference_mode():
        was = g_ab.training
        g_ab.eval()
        y = g_ab(x).float().clamp(-1, 1)
        g_ab.train(was)
    out = (y.permute(0, 2, 3, 1).numpy() + 1) / 2
    gt = load("testA_gt").astype(np.float64) / 255
    objects = (load("testA_gt") != np.array(BG_B)).any(-1, keepdims=True)
    reflected = np.where(objects, gt[..., [0, 2, 1]], gt)
    return {"rotation": float(np.abs(out - gt).mean()),
            "reflection": float(np.abs(out - reflected).mean())}  # fmt: skip


def ensure_data(raw: dict[str, Any], data: Path) -> Path:
    """The synthetic benchmark of ``data.synth`` in ``data``, built once (reused after)."""
    from cyclegan.data.synth import synthesize

    s = raw.get("data", {}).get("synth", {})
    if not (data / "testA_gt").is_dir():
        synthesize(data, train=s.get("train", 200), test=s.get("test", 40),
                   size=s.get("size", 64), seed=s.get("seed", 0))  # fmt: skip
    return data


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import yaml

    from cyclegan.config import apply_overrides, config_from_dict
    from cyclegan.evaluation.quick import quick_score
    from cyclegan.train import train
    from cyclegan.training.precision import cpu_model

    raw = apply_overrides(yaml.safe_load(Path(args.params).read_text()), args.set)
    data = ensure_data(raw, Path(args.data))
    out = Path(args.out)
    every = args.eval_every
    raw = apply_overrides(raw, [
        f"data.processed_dir={data}", f"train.out_dir={out}", "train.resume=false",
        f"train.eval_every={every}", f"train.checkpoint_every={every}",
        "tracking.enabled=false",
    ])  # fmt: skip
    cfg = config_from_dict(raw)
    baseline = mean_target_l1(data)
    target = args.target if args.target else baseline * (1 - args.target_gain)
    curve: list[dict[str, Any]] = []
    t0, scoring = time.perf_counter(), 0.0
    state: dict[str, Any] = {"reached": None, "step": 0}

    def evaluator(g_ab: Any, g_ba: Any) -> dict[str, float]:
        nonlocal scoring
        t = time.perf_counter()
        wall = t - t0 - scoring  # training time so far, earlier scoring excluded
        state["step"] += every
        scores = quick_score(g_ab, g_ba, data, "cpu")
        point = {"step": min(state["step"], cfg.train.steps), "train_s": round(wall, 1),
                 "l1_AtoB": round(scores["l1_to_gt_AtoB"], 4),
                 "l1_BtoA": round(scores["l1_to_gt_BtoA"], 4)}  # fmt: skip
        maps = hue_maps(g_ab, data)
        point["l1_AtoB_to_reflection"] = round(maps["reflection"], 4)
        point["hue_map"] = min(maps, key=maps.__getitem__)
        scoring += time.perf_counter() - t
        curve.append(point)
        print(json.dumps(point), file=sys.stderr, flush=True)
        if state["reached"] is None and point["l1_AtoB"] <= target:
            state["reached"] = point
            if not args.full:
                raise _Reached
        return scores

    with contextlib.suppress(_Reached):
        train(cfg, evaluator=evaluator)
    reached = state["reached"]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python", *sys.argv]),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "load_avg": [round(v, 2) for v in os.getloadavg()],
        "overrides": args.set,
        "seed": cfg.seed,
        "baseline_mean_target_l1": round(baseline, 4),
        "target_l1": round(target, 4),
        "reached": reached is not None,
        "time_to_target_s": reached["train_s"] if reached else None,
        "steps_to_target": reached["step"] if reached else None,
        "final": curve[-1] if curve else None,
        "best_l1_AtoB": min((p["l1_AtoB"] for p in curve), default=None),
        "hue_map": curve[-1]["hue_map"] if curve else None,
        "curve": curve,
        "samples": sorted(str(p) for p in (out / "samples").glob("*.png"))[-1:],
    }


def parse_seeds(spec: str) -> list[int]:
    """``"0,3,5"``, ``"0-9"`` (inclusive) or a mix, in the order given."""
    seeds: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds += range(int(lo), int(hi or lo) + 1)
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds: give distinct seeds such as 0,1,2 or 0-9, got {spec!r}")
    return seeds


def run_seeds(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One process of this script per seed, ``--jobs`` at a time; their JSON results."""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    import yaml

    from cyclegan.config import apply_overrides

    seeds = parse_seeds(args.seeds)
    if args.jobs < 1:
        raise SystemExit(f"--jobs: must be >= 1, got {args.jobs}")
    raw = apply_overrides(yaml.safe_load(Path(args.params).read_text()), args.set)
    data = ensure_data(raw, Path(args.data))  # before the runs: they would race to build it
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)

    def one(seed: int) -> dict[str, Any]:
        res = out / f"seed_{seed}.json"
        cmd = [sys.executable, __file__, "--params", args.params, "--data", str(data),
               "--out", str(out / f"seed_{seed}"), "--json", str(res),
               "--eval-every", str(args.eval_every), "--target", str(args.target),
               "--target-gain", str(args.target_gain), "--set", f"train.threads={threads}",
               *(a for kv in args.set for a in ("--set", kv)), "--set", f"seed={seed}",
               *(["--full"] if args.full else [])]  # fmt: skip
        print(f"seed {seed}: training (log: {out / f'seed_{seed}.log'})", file=sys.stderr)
        with open(out / f"seed_{seed}.log", "w") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
        if rc != 0:
            raise SystemExit(f"seed {seed} failed (exit {rc}); see {out / f'seed_{seed}.log'}")
        result = json.loads(res.read_text())
        print(f"seed {seed}: {_row(result)}", file=sys.stderr, flush=True)
        return result

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        return list(pool.map(one, seeds))


def _vs(l1: float, baseline: float) -> str:
    return f"{round(100 * (l1 / baseline - 1))} %".replace("-", "\u2212")


def _row(r: dict[str, Any]) -> str:
    """One seed as a table row: curve, final, vs baseline, hue map, B->A, aim first met."""
    curve, final, base = r["curve"], r["final"], r["baseline_mean_target_l1"]
    points = " / ".join(f"{p['l1_AtoB']:.4f}".lstrip("0") for p in curve[:-1]) or "-"
    met = r["steps_to_target"] if r["reached"] else "not met"
    return (f"| {r['seed']} | {points} | {final['l1_AtoB']:.4f} | "
            f"{_vs(final['l1_AtoB'], base)} | {final['hue_map']} | {final['l1_BtoA']:.4f} | "
            f"{met} |")  # fmt: skip


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Across seeds: right hue map and aim counts, the final A->B L1's mean and range."""
    finals = [r["final"]["l1_AtoB"] for r in results]
    base, target = results[0]["baseline_mean_target_l1"], results[0]["target_l1"]
    mean = sum(finals) / len(finals)
    return {
        "seeds": [r["seed"] for r in results],
        "right_hue_map": sum(r["final"]["hue_map"] == "rotation" for r in results),
        "aim_met_at_some_checkpoint": sum(bool(r["reached"]) for r in results),
        "aim_met_at_the_end": sum(f <= target for f in finals),
        "final_l1_AtoB": {
            "mean": round(mean, 4),
            "min": min(finals),
            "max": max(finals),
            "mean_vs_baseline": _vs(mean, base),
        },
        "baseline_mean_target_l1": base,
        "target_l1": target,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    s = summarize(results)
    n = len(results)
    return "\n".join([
        "| seed | A->B L1 at each checkpoint | final | vs baseline | hue map | B->A L1 "
        "| aim first met at step |",
        "|---|---|---|---|---|---|---|",
        *(_row(r) for r in results),
        "",
        f"right hue map {s['right_hue_map']}/{n}; aim (L1 <= {s['target_l1']}) met at the end "
        f"{s['aim_met_at_the_end']}/{n}, at some checkpoint {s['aim_met_at_some_checkpoint']}/{n}"
        f"; final A->B L1 mean {s['final_l1_AtoB']['mean']} "
        f"({s['final_l1_AtoB']['mean_vs_baseline']} vs baseline {s['baseline_mean_target_l1']})",
    ])  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--set", action="append", default=[], help="dotted.key=value override")
    p.add_argument("--target", type=float, default=0.0, help="absolute A->B L1 target")
    p.add_argument("--target-gain", type=float, default=0.30, help="fraction below baseline")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--full", action="store_true", help="train all steps after the target")
    tmp = Path(tempfile.gettempdir())
    p.add_argument("--data", default=str(tmp / "cyclegan-ttq-data"))
    p.add_argument("--out", default=str(tmp / "cyclegan-ttq-run"))
    p.add_argument("--json", default=None)
    p.add_argument("--seeds", default="", help="one run per seed: 0,1,2 or 0-9")
    p.add_argument("--jobs", type=int, default=1, help="with --seeds: runs at a time")
    args = p.parse_args()
    if args.seeds:
        runs = run_seeds(args)
        print(markdown(runs))
        if args.json:
            summary = {"summary": summarize(runs), "runs": runs}
            Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
        return
    result = run(args)
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
