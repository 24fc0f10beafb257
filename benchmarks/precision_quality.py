"""The quality cost of a training precision: same seed and steps, scored against ground truth.

    python benchmarks/precision_quality.py                        # fp32 vs bf16, params.yaml
    python benchmarks/precision_quality.py --seeds 0,1 --set train.steps=400 --json out.json
    python benchmarks/precision_quality.py --runs none=/tmp/a,bf16=/tmp/b   # score finished runs

Trains one run per precision (``train.amp``) and seed on the synthetic benchmark with the
project's ``train(cfg)``, all else equal, then scores each run's *last* checkpoint (the same step
count for every precision; ``best.pt`` would add checkpoint selection to the comparison) with
``evaluate`` in fp32: L1/PSNR/SSIM to ground truth and domain accuracy per direction, each with
its bootstrap interval over test images, plus the paired per-image difference against the first
precision with its own interval. A difference whose interval excludes 0 is a real cost (or
gain) on these images; across seeds, compare runs of the same seed only. ``--runs`` scores
existing training folders instead (their checkpoint's seed, steps and precision are printed).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

METRICS = (
    ("l1_to_gt", "lower"),
    ("psnr_to_gt", "higher"),
    ("ssim_to_gt", "higher"),
    ("domain_acc", "higher"),
)


def _config(args: argparse.Namespace, extra: list[str]) -> Any:
    import yaml

    from cyclegan.config import apply_overrides, config_from_dict

    raw = apply_overrides(yaml.safe_load(Path(args.params).read_text()), args.set + extra)
    return config_from_dict(raw)


def _ensure_data(args: argparse.Namespace) -> Path:
    from cyclegan.data.synth import synthesize

    cfg = _config(args, [])
    s, data = cfg.data.synth, Path(args.data)
    if not (data / "testA_gt").is_dir():
        synthesize(data, train=s.train, test=s.test, size=s.size, seed=s.seed)
    return data


def _train(args: argparse.Namespace, data: Path, amp: str, seed: int) -> Path:
    from cyclegan.train import train

    out = Path(args.work) / f"{amp}_seed{seed}"
    cfg = _config(
        args,
        [
            f"train.amp={amp}",
            f"seed={seed}",
            f"data.processed_dir={data}",
            f"train.out_dir={out}",
            "train.resume=false",
            "tracking.enabled=false",
        ],
    )
    train(cfg)
    return out


def _score(args: argparse.Namespace, data: Path, run: Path) -> dict[str, Any]:
    """fp32 evaluation of ``run``'s last checkpoint; per-image values from the CSV it writes."""
    import torch
    from time_to_quality import hue_maps

    from cyclegan.evaluate import evaluate
    from cyclegan.training.checkpoint import load_checkpoint, load_generators

    ckpt = run / "checkpoints" / "last.pt"
    meta = load_checkpoint(ckpt)  # weights_only: a checkpoint runs no pickled code
    out = run / "precision_quality"
    cfg = _config(
        args,
        [
            f"data.processed_dir={data}",
            "tracking.enabled=false",
            "evaluate.fid=false",
            "evaluate.lpips=false",
            "evaluate.curve=false",
            f"evaluate.out_dir={out}",
            f"evaluate.report_dir={out}",
        ],
    )
    result = evaluate(cfg, model=ckpt, data=data)
    per_image: dict[str, dict[str, np.ndarray]] = {}
    with open(result.paths["per_image"], newline="") as f:
        rows = list(csv.DictReader(f))
    for d in ("AtoB", "BtoA"):
        mine = [r for r in rows if r["direction"] == d]
        per_image[d] = {m: np.array([float(r[m]) for r in mine]) for m, _ in METRICS}
    tc = meta["config"]["train"]
    maps = hue_maps(load_generators(ckpt, torch.device("cpu"))[1], data)
    return {
        "hue_map": min(maps, key=maps.__getitem__),
        "run": str(run),
        "seed": meta["config"]["seed"],
        "step": meta["step"],
        "amp": tc["amp"],
        "per_image": per_image,
    }


def compare(scored: list[dict[str, Any]], resamples: int, ci: float) -> list[dict[str, Any]]:
    """One row per (run, direction, metric): mean [CI] and the paired difference to run 0."""
    from cyclegan.evaluation.bootstrap import bootstrap_ci, paired_difference

    rows = []
    ref = scored[0]
    for s in scored:
        for d in ("AtoB", "BtoA"):
            for m, better in METRICS:
                v = s["per_image"][d][m]
                row = {
                    "amp": s["amp"],
                    "hue_map": s["hue_map"],
                    "seed": s["seed"],
                    "step": s["step"],
                    "direction": d,
                    "metric": m,
                    "better": better,
                    "value": bootstrap_ci(v, resamples, ci, name=m).to_dict(),
                }
                if s is not ref:
                    diff = paired_difference(v, ref["per_image"][d][m], resamples, ci, name=m)
                    row["minus_" + ref["amp"]] = diff.to_dict()
                rows.append(row)
    return rows


def _fmt(e: dict[str, Any]) -> str:
    return f"{e['mean']:.4f} [{e['lo']:.4f}, {e['hi']:.4f}]"


def markdown(rows: list[dict[str, Any]]) -> str:
    diff_key = next((k for r in rows for k in r if k.startswith("minus_")), None)
    head = (
        "| precision | seed | hue map | direction | metric | mean [95% CI] | paired diff [95% CI] |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = _fmt(r[diff_key]) if diff_key in r else "(reference)"
        lines.append(
            f"| {r['amp']} | {r['seed']} | {r['hue_map']} | {r['direction']} | {r['metric']} "
            f"({r['better']} is better) | {_fmt(r['value'])} | {diff} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--set", action="append", default=[], help="dotted.key=value override")
    p.add_argument("--precisions", default="none,bf16", help="train.amp values; first = reference")
    p.add_argument("--seeds", default="0")
    p.add_argument("--runs", default="", help="amp=run_dir,...: score these, train nothing")
    tmp = Path(tempfile.gettempdir())
    p.add_argument("--data", default=str(tmp / "cyclegan-pq-data"))
    p.add_argument("--work", default=str(tmp / "cyclegan-pq-runs"))
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from cyclegan.training.precision import cpu_model

    data = _ensure_data(args)
    if args.runs:
        runs = [Path(item.split("=", 1)[1]) for item in args.runs.split(",")]
    else:
        seeds = [int(s) for s in args.seeds.split(",")]
        runs = [
            _train(args, data, amp, seed) for seed in seeds for amp in args.precisions.split(",")
        ]
    scored = [_score(args, data, r) for r in runs]
    rows = []
    for seed in dict.fromkeys(s["seed"] for s in scored):  # paired within a seed only
        rows += compare([s for s in scored if s["seed"] == seed], args.resamples, 0.95)
    print(markdown(rows))
    if args.json:
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": " ".join(["python", *sys.argv]),
            "cpu": cpu_model(),
            "load_avg": [round(v, 2) for v in os.getloadavg()],
            "runs": [s["run"] for s in scored],
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
