"""LPIPS (torchmetrics' implementation) with weight files we resolve ourselves, never downloads.

Two files: the ImageNet backbone (torchvision's ``alexnet-owt-7be5be79.pth`` etc., resolved like
the Inception weights) and the LPIPS v0.1 linear layers, which torchmetrics ships inside its
package (``torchmetrics/functional/image/lpips_models/<net>.pth``); ``evaluate.lpips_weights``
may point elsewhere. Inputs are asserted to be in ``[-1, 1]`` and passed with ``normalize=False``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cyclegan.evaluation.metrics import check_pair
from cyclegan.evaluation.weights import (
    ResolvedWeights,
    WeightsError,
    WeightSpec,
    check_state_dict,
    load_state_dict_file,
    lpips_backbone_spec,
    resolve_weights,
)
from cyclegan.storage import sha256_file

NORMALIZE = False  # inputs are in [-1, 1]: torchmetrics must not rescale them from [0, 1]


def _package_file(net: str) -> Path:
    import torchmetrics.functional.image.lpips as tm_lpips

    return Path(tm_lpips.__file__).parent / "lpips_models" / f"{net}.pth"


def linear_spec(net: str) -> WeightSpec:
    """The LPIPS v0.1 linear-layer file; 'official' means identical to torchmetrics' copy."""
    packaged = _package_file(net)
    return WeightSpec(
        what=f"LPIPS {net} linear-layer weights (v0.1)",
        filename=f"{net}.pth",
        url=f"https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/{net}.pth",
        param="evaluate.lpips_weights",
        sha256=sha256_file(packaged) if packaged.is_file() else "",
    )


def resolve_linear(net: str, explicit: str = "") -> ResolvedWeights:
    """``evaluate.lpips_weights`` (path or s3://) when set, else the file torchmetrics ships."""
    spec = linear_spec(net)
    if explicit.strip():
        return resolve_weights(spec, explicit, download=False)
    packaged = _package_file(net)
    if not packaged.is_file():
        raise WeightsError(
            f"{spec.what}: torchmetrics does not ship {packaged}; set {spec.param} to a local "
            f"path or s3:// URI of {spec.filename} ({spec.url})"
        )
    return ResolvedWeights(spec, packaged, "package", sha256_file(packaged))


def _slices(backbone: nn.Module) -> list[nn.Module]:
    """torchmetrics splits torchvision's ``features`` into slices whose children keep the index."""
    if hasattr(backbone, "slices"):
        return list(backbone.slices)
    return [getattr(backbone, f"slice{i}") for i in range(1, 6)]


def _load_backbone(backbone: nn.Module, weights: ResolvedWeights) -> None:
    sd = load_state_dict_file(weights)
    modules = {idx: mod for sl in _slices(backbone) for idx, mod in sl.named_children()}
    reference = {
        f"features.{idx}.{k}": v
        for idx, mod in modules.items()
        for k, v in mod.state_dict().items()
    }
    check_state_dict(sd, reference, weights)
    for idx, mod in modules.items():
        prefix = f"features.{idx}."
        mod.load_state_dict({k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)})


@dataclass
class LpipsScorer:
    """A ready LPIPS network; call it on two ``[-1, 1]`` batches for per-image distances."""

    net: nn.Module
    name: str
    backbone: ResolvedWeights
    linear: ResolvedWeights
    device: torch.device

    @torch.no_grad()
    def __call__(self, a: Tensor, b: Tensor, batch_size: int = 16) -> Tensor:
        check_pair(a, b, ("lpips input", "lpips reference"), rgb=True)
        out = []
        for i in range(0, len(a), batch_size):
            x = a[i : i + batch_size].float().clamp(-1, 1).to(self.device)
            y = b[i : i + batch_size].float().clamp(-1, 1).to(self.device)
            out.append(self.net(x, y, normalize=NORMALIZE).reshape(-1).double().cpu())
        return torch.cat(out)

    def protocol(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {
            "library": f"torchmetrics {version('torchmetrics')}",
            "net": self.name,
            "input": "float RGB in [-1, 1], normalize=False",
            "resize": "none (native size)",
            "backbone": self.backbone.protocol(),
            "linear": self.linear.protocol(),
        }


def load_lpips(
    net: str = "alex",
    device: str | torch.device = "cpu",
    backbone_weights: str = "",
    linear_weights: str = "",
    download: bool = True,
) -> LpipsScorer:
    """Resolve both files and build torchmetrics' LPIPS network without touching the network."""
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    backbone = resolve_weights(lpips_backbone_spec(net), backbone_weights, download)
    linear = resolve_linear(net, linear_weights)
    lin_sd = load_state_dict_file(linear)
    model = _NoTrainLpips(pretrained=False, net=net, pnet_rand=True)  # no torchvision download
    ref = {k: v for k, v in model.state_dict().items() if re.match(r"lin\d+\.", k)}
    check_state_dict(lin_sd, ref, linear)
    model.load_state_dict({k: lin_sd[k] for k in ref}, strict=False)
    _load_backbone(model.net, backbone)
    model.eval().requires_grad_(False)
    return LpipsScorer(model.to(device), net, backbone, linear, torch.device(device))
