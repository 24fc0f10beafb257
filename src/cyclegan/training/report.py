"""Run outputs people and DVC read: a loss-curve PNG, a CSV for ``dvc plots``, a metrics JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path

CURVES = (("G", "D"), ("cycle_A", "cycle_B"), ("idt_A", "idt_B"), ("D_A", "D_B"))


def read_log(out_dir: Path) -> list[dict[str, float]]:
    path = out_dir / "train_log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_outputs(out_dir: Path, log_to_mlflow: bool = False) -> dict[str, Path]:
    """Write ``losses.csv``, ``loss_curves.png`` and ``metrics.json`` from ``train_log.jsonl``."""
    rows = read_log(out_dir)
    if not rows:
        return {}
    keys = sorted({k for r in rows for k in r} - {"step"})
    csv_path = out_dir / "losses.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", *keys])
        w.writeheader()
        w.writerows(rows)
    last = rows[-1]
    metrics_path = out_dir / "metrics.json"
    metrics_path.write_text(
        json.dumps({"step": last["step"], **{k: last[k] for k in keys}}, indent=2, sort_keys=True)
    )
    png = _plot(rows, out_dir / "loss_curves.png")
    if log_to_mlflow:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.log_artifact(str(png))
            mlflow.log_artifact(str(csv_path))
    return {"csv": csv_path, "metrics": metrics_path, "png": png}


def _plot(rows: list[dict[str, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for ax, names in zip(axes, CURVES, strict=True):
        for name in names:
            if name in rows[0]:
                ax.plot(steps, [r.get(name, float("nan")) for r in rows], label=name)
        ax.set_xlabel("step")
        ax.set_title(" / ".join(names))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:  # e.g. the identity losses with loss.lambda_identity = 0: not computed, not logged
            ax.text(0.5, 0.5, "not logged in this run", ha="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
