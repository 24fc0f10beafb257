"""A procedural unpaired benchmark with exact ground truth (the embedded default dataset).

Every scene (a few ellipses, rectangles and triangles) is drawn from one distribution and can be
rendered in two styles:

* **A**: flat objects in warm hues (0-120 degrees, skewed towards red) on a cream background;
* **B**: the same objects with their RGB channels rotated (r, g, b) -> (b, r, g) - a fixed
  +120 degree hue rotation, so B hues lie in 120-240 degrees - darkened on horizontal stripes
  (rows with ``y % 4 < 2``) inside the object masks, on a dark slate background.

The B style is a deterministic function of the A rendering (a per-pixel colour map plus a texture
whose period, 4 px, a generator with two stride-2 stages can represent exactly), so a small
CycleGAN can learn it and be scored against ground truth: ``testA_gt/<name>`` is the
``testA/<name>`` scene rendered in style B and ``testB_gt/<name>`` the ``testB`` scene in A.
Training splits are unpaired: A and B use different scenes.

Why the hue density is skewed (``hue = 120 deg * u ** HUE_SKEW``): with a uniform density the hue
*reflection* h -> 240 - h (swap R and B) maps A's colours onto B's exactly as well as the true
rotation, so unpaired losses cannot tell them apart and runs settled on either by chance. A
density that is not symmetric about 60 degrees makes the rotation the only channel map whose
output colours are distributed like B's, so the ground truth is identifiable from unpaired data.
"""

from __future__ import annotations

import colorsys
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from cyclegan.data.errors import DataError
from cyclegan.data.io import staged_dir

BG_A = (228, 222, 205)
BG_B = (44, 52, 74)
STRIPE_PERIOD = 4
STRIPE_GAIN = 0.5
HUE_RANGE_A = (0.0, 1.0 / 3.0)
HUE_SKEW = 2.0  # hue = range * u**HUE_SKEW: median 30 degrees, not symmetric (see module doc)
SHAPES = ("ellipse", "rectangle", "triangle")
# (split, domain) -> seed stream id; A and B train scenes come from different streams
_STREAMS = {"trainA": 1, "trainB": 2, "testA": 3, "testB": 4}


@dataclass(frozen=True)
class SceneObject:
    shape: str
    cx: float
    cy: float
    radius: float
    angle: float
    color_a: tuple[int, int, int]


@dataclass
class SynthResult:
    out: Path
    counts: dict[str, int]
    size: int
    seed: int
    params: dict = field(default_factory=dict)

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        return f"synthetic dataset ({self.size}px, seed {self.seed}) -> {self.out}: {counts}"


def sample_scene(rng: np.random.Generator, size: int) -> list[SceneObject]:
    """2-4 objects; colours are A-style (warm hues, saturated, bright)."""
    objects = []
    for _ in range(int(rng.integers(2, 5))):
        lo, hi = HUE_RANGE_A
        hue = lo + (hi - lo) * rng.uniform() ** HUE_SKEW
        r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0))
        objects.append(
            SceneObject(
                shape=SHAPES[int(rng.integers(len(SHAPES)))],
                cx=rng.uniform(0.15, 0.85) * size,
                cy=rng.uniform(0.15, 0.85) * size,
                radius=rng.uniform(0.12, 0.25) * size,
                angle=rng.uniform(0, 2 * math.pi),
                color_a=(round(r * 255), round(g * 255), round(b * 255)),
            )
        )
    return objects


def _label_map(scene: list[SceneObject], size: int) -> np.ndarray:
    """HxW uint8: 0 = background, k = k-th object (later objects occlude earlier ones)."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for k, o in enumerate(scene, start=1):
        box = (o.cx - o.radius, o.cy - o.radius, o.cx + o.radius, o.cy + o.radius)
        if o.shape == "ellipse":
            draw.ellipse(box, fill=k)
        elif o.shape == "rectangle":
            draw.rectangle(box, fill=k)
        else:
            pts = [
                (
                    o.cx + o.radius * math.cos(o.angle + i * 2 * math.pi / 3),
                    o.cy + o.radius * math.sin(o.angle + i * 2 * math.pi / 3),
                )
                for i in range(3)
            ]
            draw.polygon(pts, fill=k)
    return np.asarray(canvas)


def style_b_color(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """The fixed +120 degree hue rotation: (r, g, b) -> (b, r, g)."""
    r, g, b = rgb
    return (b, r, g)


def stripe_mask(size: int) -> np.ndarray:
    """HxW bool: the darkened rows of the B texture."""
    rows = (np.arange(size) % STRIPE_PERIOD) < STRIPE_PERIOD // 2
    return np.broadcast_to(rows[:, None], (size, size))


def render(scene: list[SceneObject], size: int, style: str) -> np.ndarray:
    """HxWx3 uint8 rendering of ``scene`` in style ``"A"`` or ``"B"``."""
    labels = _label_map(scene, size)
    if style == "A":
        palette = np.array([BG_A, *(o.color_a for o in scene)], dtype=np.float64)
        return palette[labels].astype(np.uint8)
    if style != "B":
        raise ValueError(f"style must be 'A' or 'B', got {style!r}")
    palette = np.array([BG_B, *(style_b_color(o.color_a) for o in scene)], dtype=np.float64)
    img = palette[labels]
    dark = (labels > 0) & stripe_mask(size)
    img[dark] *= STRIPE_GAIN
    return np.rint(img).astype(np.uint8)


def generator_params(size: int, seed: int, train: int, test: int) -> dict:
    """What README/synth.json record, so a reader can regenerate or reason about the data."""
    return {
        "generator": "cyclegan.data.synth",
        "train": train,
        "test": test,
        "size": size,
        "seed": seed,
        "objects_per_scene": [2, 4],
        "shapes": list(SHAPES),
        "radius_fraction": [0.12, 0.25],
        "style_A": {
            "background": BG_A,
            "hue_degrees": [0, 120],
            "hue_density": f"120 * u ** {HUE_SKEW}, u ~ U(0, 1)",
            "texture": "flat",
        },
        "style_B": {
            "background": BG_B,
            "color_map": "(r, g, b) -> (b, r, g), i.e. hue + 120 degrees",
            "texture": f"rows with y % {STRIPE_PERIOD} < {STRIPE_PERIOD // 2} inside objects "
            f"multiplied by {STRIPE_GAIN}",
        },
        "ground_truth": "testA_gt/<name> = testA scene in style B; testB_gt/<name> = testB in A",
    }


def _save_png(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(arr, mode="RGB").save(path, format="PNG", optimize=False, compress_level=6)


def _write_split(stage: Path, split: str, n: int, size: int, seed: int, bar: tqdm) -> None:
    style = split[-1]
    other = "B" if style == "A" else "A"
    width = max(5, len(str(n - 1)))
    (stage / split).mkdir()
    if split.startswith("test"):
        (stage / f"{split}_gt").mkdir()
    for i in range(n):
        scene = sample_scene(np.random.default_rng([seed, _STREAMS[split], i]), size)
        name = f"{i:0{width}d}.png"
        _save_png(render(scene, size, style), stage / split / name)
        if split.startswith("test"):
            _save_png(render(scene, size, other), stage / f"{split}_gt" / name)
        bar.update(1)


def synthesize(
    out: str | Path,
    train: int = 200,
    test: int = 40,
    size: int = 64,
    seed: int = 0,
    *,
    overwrite: bool = False,
    progress: bool = True,
    finish: Callable[[Path], None] | None = None,
) -> SynthResult:
    """Write ``trainA trainB testA testB testA_gt testB_gt`` + README.txt + synth.json.

    Byte-identical for the same arguments. Written atomically (staged, then renamed);
    ``finish`` may add files to the staged folder before it is published.
    """
    if train < 1 or test < 1:
        raise DataError(f"synth: --train and --test must be >= 1, got train={train}, test={test}")
    if not 16 <= size <= 1024:
        raise DataError(f"synth: --size must be between 16 and 1024 px, got {size}")
    out = Path(out)
    params = generator_params(size, seed, train, test)
    counts = {"trainA": train, "trainB": train, "testA": test, "testB": test}
    with (
        staged_dir(out, overwrite) as stage,
        tqdm(total=2 * (train + test), desc="synth", unit="img", disable=not progress) as bar,
    ):
        for split, n in counts.items():
            _write_split(stage, split, n, size, seed, bar)
        (stage / "synth.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
        (stage / "README.txt").write_text(_readme(params))
        if finish is not None:
            finish(stage)
    counts.update({"testA_gt": test, "testB_gt": test})
    return SynthResult(out=out, counts=counts, size=size, seed=seed, params=params)


def _readme(params: dict) -> str:
    return (
        "Synthetic unpaired benchmark written by `cyclegan data synth` (cyclegan.data.synth).\n"
        "trainA/trainB: different random scenes in style A / style B (unpaired).\n"
        "testA/testB: test scenes; testA_gt/NAME is testA/NAME rendered in style B, and\n"
        "testB_gt/NAME is testB/NAME rendered in style A (ground truth for exact metrics).\n"
        f"Regenerate: cyclegan data synth OUT --train {params['train']} --test {params['test']}"
        f" --size {params['size']} --seed {params['seed']}\n"
        "Generator parameters (also in synth.json):\n"
        + json.dumps(params, indent=2, sort_keys=True)
        + "\n"
    )
