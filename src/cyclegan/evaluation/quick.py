"""A cheap, weight-free score for checkpoint selection during training (lower is better).

With ground truth (``testA_gt``/``testB_gt``, the synthetic benchmark) the score is the mean L1
between translations and ground truth over both directions: exactly what the final evaluation's
headline measures. Without ground truth it is ``cycle_l1 + (1 - domain_acc)``: cycle L1 alone
would reward an identity mapping, the domain classifier (trained once per process and data root,
cached) penalises it. Test images are loaded once per process and cached too.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from cyclegan.data.io import list_images, load_image, pixel_array
from cyclegan.evaluation.classifier import TrainedClassifier, train_classifier
from cyclegan.evaluation.errors import EvalError
from cyclegan.evaluation.images import ImageSet, load_folder, load_ground_truth
from cyclegan.evaluation.suite import DIRECTIONS, means, run_direction, weight_free

QUICK_BATCH = 40  # one batch per direction for the default 40 images
QUICK_CLASSIFIER_STEPS = 150
QUICK_CLASSIFIER_TRAIN = 200  # images per domain


def _native_size(folder: Path, channels: int) -> int:
    paths = list_images(folder) if folder.is_dir() else []
    if not paths:
        raise EvalError(f"quick_score: no images in {folder} (expected the processed test split)")
    return min(pixel_array(load_image(paths[0], channels=channels)).shape[:2])


@functools.lru_cache(maxsize=4)
def _test_sets(
    root: str, max_images: int, channels: tuple[int, int]
) -> dict[str, tuple[ImageSet, ImageSet | None]]:
    base = Path(root)
    nc = dict(zip("AB", channels, strict=True))
    size = _native_size(base / "testA", nc["A"])
    out = {}
    for split, other in (("A", "B"), ("B", "A")):
        images = load_folder(base / f"test{split}", size, max_images, nc[split])
        gt = load_ground_truth(base, f"test{split}", images, size, nc[other])
        out[split] = (images, gt)
    return out


@functools.lru_cache(maxsize=4)
def _classifier(root: str, size: int, channels: int) -> TrainedClassifier:
    base = Path(root)
    a = load_folder(base / "trainA", size, QUICK_CLASSIFIER_TRAIN, channels).images
    b = load_folder(base / "trainB", size, QUICK_CLASSIFIER_TRAIN, channels).images
    return train_classifier(a, b, steps=QUICK_CLASSIFIER_STEPS, seed=0)


def quick_score(
    g_ab: nn.Module,
    g_ba: nn.Module,
    data_root: str | Path,
    device: str | torch.device = "cpu",
    max_images: int = 40,
    channels: tuple[int, int] = (3, 3),
) -> dict[str, float]:
    """Weight-free metrics on the first ``max_images`` test images per domain; key ``score``.

    ``channels`` are domain A's and B's. Without ground truth and with different channel
    counts (no domain classifier possible) the score is the cycle L1 alone.
    The generators are switched to eval mode for the call and restored afterwards.
    """
    sets = _test_sets(str(Path(data_root).resolve()), max_images, tuple(channels))
    has_gt = all(gt is not None for _, gt in sets.values())
    clf = None
    if not has_gt and channels[0] == channels[1]:
        root = str(Path(data_root).resolve())
        clf = _classifier(root, sets["A"][0].images.shape[-1], channels[0])
    gens = {"A": g_ab, "B": g_ba}
    modes = {k: g.training for k, g in gens.items()}
    out: dict[str, float] = {}
    try:
        for g in gens.values():
            g.eval()
        for name, (src, dst) in DIRECTIONS.items():
            images, gt = sets[src]
            d = run_direction(
                name,
                images.images,
                images.names,
                gens[src],
                gens[dst],
                None if gt is None else gt.images,
                QUICK_BATCH,
                device,
            )
            out.update({f"{k}_{name}": v for k, v in means(weight_free(d, clf, False)).items()})
    finally:
        for k, g in gens.items():
            g.train(modes[k])
    for key in ("l1_to_gt", "cycle_l1", "domain_acc"):
        if f"{key}_AtoB" in out:
            out[key] = (out[f"{key}_AtoB"] + out[f"{key}_BtoA"]) / 2
    if has_gt:
        out["score"] = out["l1_to_gt"]
    else:
        out["score"] = out["cycle_l1"] + (1.0 - out["domain_acc"] if clf is not None else 0.0)
    return out
