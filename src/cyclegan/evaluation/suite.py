"""Translate the test sets and score them: per-image metrics, CIs, paired gains, set metrics.

Directions: ``AtoB`` translates testA and compares with testB (and testA_gt), ``BtoA`` the
reverse. Each per-image metric has an identity baseline where one makes sense (the input itself
scored as if it were the translation), and a paired bootstrap ``*_gain`` (positive = the model
beats doing nothing) which is the honest test of "better than identity". With ground truth a
second baseline paints every image as the per-pixel mean of the target training images: on the
synthetic benchmark it is far stronger than identity (an untrained generator already beats
identity on L1), so ``l1_to_gt_gain_vs_mean`` > 0 is the bar for "learned something per image".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from cyclegan.evaluation import metrics as M
from cyclegan.evaluation.bootstrap import Estimate, bootstrap_ci, paired_difference
from cyclegan.evaluation.classifier import TrainedClassifier
from cyclegan.evaluation.errors import EvalError

if TYPE_CHECKING:  # keeps quick_score's import graph free of the weight-loading modules
    from cyclegan.evaluation.lpips import LpipsScorer

Generator = Callable[[Tensor], Tensor]
DIRECTIONS = {"AtoB": ("A", "B"), "BtoA": ("B", "A")}
# (gain name, model metric, baseline metric, sign): gain = sign * (model - baseline)
GAINS = (
    ("l1_to_gt_gain", "l1_to_gt", "identity_l1_to_gt", -1.0),
    ("l1_to_gt_gain_vs_mean", "l1_to_gt", "mean_target_l1_to_gt", -1.0),
    ("psnr_to_gt_gain", "psnr_to_gt", "identity_psnr_to_gt", 1.0),
    ("ssim_to_gt_gain", "ssim_to_gt", "identity_ssim_to_gt", 1.0),
    ("lpips_to_gt_gain", "lpips_to_gt", "identity_lpips_to_gt", -1.0),
    ("domain_acc_gain", "domain_acc", "identity_domain_acc", 1.0),
)


@torch.inference_mode()
def translate(
    g: Generator,
    x: Tensor,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    name: str = "generator",
) -> Tensor:
    """Run ``g`` over ``x`` in batches; outputs are checked to be finite and in ``[-1, 1]``."""
    out = [g(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    y = torch.cat(out)
    if y.shape[0] != x.shape[0] or y.shape[2:] != x.shape[2:]:  # channels may differ
        raise EvalError(
            f"{name} output shape {tuple(y.shape)} != input shape {tuple(x.shape)}; evaluate "
            "needs same-size translations (check model.input_nc/output_nc and the image size)"
        )
    M.check_images(y, f"{name} output")
    return y.clamp(-1.0, 1.0)


@dataclass
class Direction:
    """One direction's images: inputs, translations, reconstructions, optional ground truth."""

    name: str  # AtoB | BtoA
    inputs: Tensor
    fake: Tensor
    rec: Tensor
    gt: Tensor | None
    names: list[str]
    target_mean: Tensor | None = None  # per-pixel mean of the target training images (1×C×H×W)

    @property
    def target(self) -> str:
        return DIRECTIONS[self.name][1]


def run_direction(
    name: str,
    inputs: Tensor,
    names: list[str],
    fwd: Generator,
    bwd: Generator,
    gt: Tensor | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> Direction:
    """Translate ``inputs`` with ``fwd`` and back with ``bwd``."""
    src, dst = DIRECTIONS[name]
    fake = translate(fwd, inputs, batch_size, device, f"G_{src}{dst}")
    rec = translate(bwd, fake, batch_size, device, f"G_{dst}{src}")
    if gt is not None and gt.shape[1] == inputs.shape[1]:
        M.check_pair(inputs, gt, (f"test{src}", f"test{src}_gt"))
    elif gt is not None:  # N-channel data: ground truth has the target domain's channels
        M.check_pair(fake, gt, (f"G_{src}{dst} output", f"test{src}_gt"))
    return Direction(name, inputs, fake, rec, gt, names)


def weight_free(
    d: Direction, clf: TrainedClassifier | None, full: bool = True
) -> dict[str, np.ndarray]:
    """Per-image metrics that need no downloaded weights (``full=False``: the quick subset)."""
    out = {"cycle_l1": M.l1(d.rec, d.inputs)}
    if d.gt is not None:
        out["l1_to_gt"] = M.l1(d.fake, d.gt)
    if clf is not None:
        out["domain_acc"] = clf.assigned(d.fake, d.target)
    if not full:
        return {k: v.double().numpy() for k, v in out.items()}
    out["cycle_psnr"] = M.psnr(d.rec, d.inputs)
    # identity baselines need the input to have the target's channel count
    same = d.gt is not None and d.inputs.shape[1] == d.gt.shape[1]
    if d.gt is not None:
        if same:
            out["identity_l1_to_gt"] = M.l1(d.inputs, d.gt)
        out["psnr_to_gt"] = M.psnr(d.fake, d.gt)
        if same:
            out["identity_psnr_to_gt"] = M.psnr(d.inputs, d.gt)
        if d.target_mean is not None:  # "paint the average target image": a far stronger bar
            out["mean_target_l1_to_gt"] = M.l1(d.target_mean.expand_as(d.gt), d.gt)
        if min(d.inputs.shape[-2:]) >= M.SSIM_KERNEL:
            out["ssim_to_gt"] = M.ssim(d.fake, d.gt)
            if same:
                out["identity_ssim_to_gt"] = M.ssim(d.inputs, d.gt)
    if clf is not None:
        p_b = clf.prob_b(d.fake)
        out.update(
            identity_domain_acc=clf.assigned(d.inputs, d.target),
            target_prob=p_b if d.target == "B" else 1 - p_b,
        )
    return {k: v.double().numpy() for k, v in out.items()}


def lpips_metrics(d: Direction, scorer: LpipsScorer, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Content preservation (input vs translation) and, with ground truth, distance to it.

    Grey images are repeated to RGB (``metrics.as_rgb``); with any other channel count there
    is nothing to score (the caller notes why).
    """
    inputs, fake = M.as_rgb(d.inputs), M.as_rgb(d.fake)
    if inputs is None or fake is None:
        return {}
    out = {"lpips_content": scorer(inputs, fake, batch_size)}
    gt = None if d.gt is None else M.as_rgb(d.gt)
    if gt is not None:
        out["lpips_to_gt"] = scorer(fake, gt, batch_size)
        out["identity_lpips_to_gt"] = scorer(inputs, gt, batch_size)
    return {k: v.numpy() for k, v in out.items()}


def estimates(
    per_image: dict[str, np.ndarray], resamples: int, ci: float, seed: int
) -> dict[str, Estimate]:
    """A bootstrap CI for every per-image metric, plus the paired gains over identity."""
    out = {k: bootstrap_ci(v, resamples, ci, seed, name=k) for k, v in sorted(per_image.items())}
    for gain, model, base, sign in GAINS:
        if model in per_image and base in per_image:
            out[gain] = paired_difference(
                sign * per_image[model], sign * per_image[base], resamples, ci, seed, name=gain
            )
    return out


def means(per_image: dict[str, np.ndarray]) -> dict[str, float]:
    """Plain means (checkpoint curves and quick scores do not need intervals)."""
    return {k: float(np.mean(v)) for k, v in per_image.items()}
