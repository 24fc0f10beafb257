"""Evaluation outputs: DVC metrics JSON, per-image CSV, checkpoint curve CSV, PNG grid, HTML.

``eval.json`` holds numbers only (DVC metrics); every score's protocol (library versions, weight
hashes, resize, sample counts) goes to ``eval_protocol.json`` under the same key. The HTML report
embeds its PNG so it renders on its own, also as an MLflow artefact.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor

from cyclegan.data.transforms import display_rgb
from cyclegan.evaluation.bootstrap import Estimate
from cyclegan.evaluation.metrics import HIGHER_IS_BETTER
from cyclegan.evaluation.suite import Direction
from cyclegan.storage import atomic_write_bytes

CELL_MIN = 96  # report thumbnails are upscaled (nearest) to at least this many pixels
GAP = 2  # white pixels between thumbnails


def estimates_to_dict(est: dict[str, Estimate]) -> dict[str, dict[str, float | int]]:
    return {k: v.to_dict() for k, v in est.items()}


def write_json(path: Path, data: dict[str, Any]) -> Path:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    return path


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> Path:
    """Rows -> CSV with the union of keys as columns (blank where a row lacks a value)."""
    cols = columns or list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v) for k, v in row.items()})
    atomic_write_bytes(path, buf.getvalue().encode())
    return path


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float | np.floating) else v


def per_image_rows(
    direction: str, names: list[str], per_image: dict[str, np.ndarray]
) -> list[dict[str, Any]]:
    keys = sorted(per_image)
    return [
        {"direction": direction, "image": n, **{k: float(per_image[k][i]) for k in keys}}
        for i, n in enumerate(names)
    ]


def _to_pil(x: Tensor) -> Image.Image:
    x = display_rgb(x.detach().float().cpu()[None])[0]  # grey / multispectral: bands 1-3
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().byte()
    img = Image.fromarray(arr.permute(1, 2, 0).numpy(), "RGB")
    scale = max(1, -(-CELL_MIN // max(img.size)))
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def grid_png(directions: list[Direction], n: int, path: Path) -> Path:
    """Rows of input | translation | reconstruction | ground truth, one block per direction."""
    blocks = []
    for d in directions:
        cols = [("input", d.inputs), ("translation", d.fake), ("reconstruction", d.rec)]
        if d.gt is not None:
            cols.append(("ground truth", d.gt))
        k = min(n, len(d.inputs))
        cells = [[_to_pil(t[i]) for _, t in cols] for i in range(k)]
        w, h = cells[0][0].size[0] + GAP, cells[0][0].size[1] + GAP
        block = Image.new("RGB", (w * len(cols), 16 + h * k + 14), "white")
        draw = ImageDraw.Draw(block)
        draw.text((4, 2), d.name.replace("to", " -> "), fill="black")
        for j, (label, _) in enumerate(cols):
            draw.text((j * w + 4, 16 + h * k + 1), label, fill="black")
        for i, row in enumerate(cells):
            for j, cell in enumerate(row):
                block.paste(cell, (j * w, 16 + i * h))
        blocks.append(block)
    width = max(b.width for b in blocks)
    out = Image.new("RGB", (width, sum(b.height for b in blocks)), "white")
    y = 0
    for b in blocks:
        out.paste(b, (0, y))
        y += b.height
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _better(name: str) -> str:
    if name.endswith("_gain_vs_mean"):
        return "higher (>0 beats the mean target image)"
    if name.endswith("_gain"):
        return "higher (>0 beats identity)"
    if name.startswith("identity_"):
        return "baseline: the untranslated input"
    if name.startswith("mean_target_"):
        return "baseline: per-pixel mean of the target training images"
    if name == "target_prob":
        return "higher"
    for key, higher in HIGHER_IS_BETTER.items():
        if key in name:
            return "higher" if higher else "lower"
    return ""


def _cell(v: Any) -> str:
    if isinstance(v, dict) and {"mean", "lo", "hi"} <= v.keys():
        return f"{v['mean']:.4f} [{v['lo']:.4f}, {v['hi']:.4f}] (n={v.get('n', '?')})"
    if isinstance(v, dict):
        return html.escape(", ".join(f"{k}={_fmt(x)}" for k, x in v.items()))
    return html.escape(str(_fmt(v)))


def _table(title: str, rows: dict[str, Any]) -> str:
    body = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_cell(v)}</td><td>{_better(k)}</td></tr>"
        for k, v in rows.items()
    )
    return (
        f"<h2>{html.escape(title)}</h2><table><tr><th>metric</th><th>value [CI]</th>"
        f"<th>better</th></tr>{body}</table>"
    )


def report_html(
    metrics: dict[str, Any],
    protocol: dict[str, Any],
    png: Path | None,
    path: Path,
    notes: list[str],
    header: dict[str, str],
    curve: list[dict[str, Any]],
) -> Path:
    """A standalone HTML page: header, notes, metric tables, image grid, curve, protocol."""
    parts = [
        "<html><head><meta charset='utf-8'><title>CycleGAN evaluation</title><style>",
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}",
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}</style></head><body>",
        "<h1>CycleGAN evaluation</h1><ul>",
    ]
    parts += [f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in header.items()]
    parts.append("</ul>")
    if notes:
        parts.append("<h2>Notes</h2><ul>")
        parts += [f"<li>{html.escape(n)}</li>" for n in notes]
        parts.append("</ul>")
    for key, value in metrics.items():
        if isinstance(value, dict):
            parts.append(_table(key, value))
    if png is not None:
        img = base64.b64encode(png.read_bytes()).decode()
        parts.append(f"<h2>Samples</h2><img src='data:image/png;base64,{img}' alt='samples'>")
    if curve:
        cols = list(dict.fromkeys(k for r in curve for k in r))
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        rows = "".join(
            "<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>"
            for r in curve
        )
        parts.append(f"<h2>Checkpoint curve</h2><table><tr>{head}</tr>{rows}</table>")
    proto = html.escape(json.dumps(protocol, indent=2, sort_keys=True, default=str))
    parts.append(f"<h2>Protocol</h2><pre>{proto}</pre></body></html>")
    atomic_write_bytes(path, "\n".join(parts).encode())
    return path
