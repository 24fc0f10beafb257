"""FID and KID with torchmetrics on the standard Inception features, computed once per set.

Protocol (recorded with every score by :func:`protocol`): images are ``uint8`` RGB; the
extractor (torchmetrics' ``NoTrainInceptionV3``, i.e. torch-fidelity's network with the
2015-12-05 TF weights) resizes them itself to 299×299 with the TF1-compatible bilinear resize
(``antialias=False``, as torch-fidelity and the TF reference do); features are the 2048-d pool3
activations; full test sets; KID uses 100 subsets of ``min(kid_subset_size, smaller set)``
images with the cubic polynomial kernel. Features are extracted once and fed to both metrics.
FID needs thousands of images to be unbiased; below ``FID_MIN_IMAGES`` KID is the primary score.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from cyclegan.evaluation.errors import EvalError
from cyclegan.evaluation.weights import (
    INCEPTION,
    ResolvedWeights,
    WeightsError,
    load_state_dict_file,
    resolve_weights,
)

FEATURE_DIM = 2048
FID_MIN_IMAGES = 2048  # below this FID is strongly biased (upwards); say so with every score
KID_SUBSETS = 100
RESIZE = "299x299 bilinear inside the extractor (TF1-compatible, antialias=False)"


class _Precomputed(nn.Module):
    """Identity 'extractor': the metrics receive Inception features computed beforehand."""

    num_features = FEATURE_DIM

    def forward(self, x: Tensor) -> Tensor:
        return x


@dataclass
class InceptionExtractor:
    """The FID Inception network on a device, with the file it was loaded from."""

    net: nn.Module
    weights: ResolvedWeights
    device: torch.device

    @torch.no_grad()
    def features(self, images: Tensor, batch_size: int = 32, desc: str = "inception") -> Tensor:
        """``N×3×H×W uint8`` -> ``N×2048 float64`` (CPU)."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise EvalError(
                f"{desc}: FID/KID take uint8 N×3×H×W images, got {images.dtype} "
                f"{tuple(images.shape)} (convert with metrics.to_uint8)"
            )
        chunks = []
        for i in tqdm(range(0, len(images), batch_size), desc=desc, leave=False):
            batch = images[i : i + batch_size].to(self.device)
            chunks.append(self.net(batch).double().cpu())
        return torch.cat(chunks)


def load_inception(
    weights: ResolvedWeights | None = None,
    device: str | torch.device = "cpu",
    explicit: str = "",
    download: bool = True,
) -> InceptionExtractor:
    """Build the extractor from a local file (resolving it first when ``weights`` is None)."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    weights = weights or resolve_weights(INCEPTION, explicit, download)
    load_state_dict_file(weights)  # weights_only check before torch-fidelity unpickles it
    try:
        net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(FEATURE_DIM)],
            feature_extractor_weights_path=str(weights.path),
            antialias=False,
        )
    except RuntimeError as e:  # load_state_dict: missing/unexpected keys, wrong shapes
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:]) or str(e)
        raise WeightsError(
            f"{weights.path}: not {INCEPTION.what} ({detail[:300]}). Expected {INCEPTION.filename}."
        ) from e
    device = torch.device(device)
    return InceptionExtractor(net.to(device), weights, device)


def fid_kid(
    real: Tensor, fake: Tensor, kid_subset_size: int = 1000, seed: int = 0
) -> dict[str, float]:
    """FID and KID (mean, std over subsets) between two feature sets (``N×2048``)."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    n_real, n_fake = len(real), len(fake)
    if min(n_real, n_fake) < 2:
        raise EvalError(f"FID/KID need at least 2 images per set, got {n_real} real, {n_fake} fake")
    subset = min(kid_subset_size, n_real, n_fake)
    fid = FrechetInceptionDistance(feature=_Precomputed(), normalize=False)
    with warnings.catch_warnings():  # "KID will save all extracted features": yes, 2048-d each
        warnings.filterwarnings("ignore", message=".*Kernel Inception Distance.*")
        kid = KernelInceptionDistance(
            feature=_Precomputed(), subsets=KID_SUBSETS, subset_size=subset, normalize=False
        )
    for metric in (fid, kid):
        metric.update(real.double(), real=True)
        metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws subsets from torch's global RNG
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {
        "fid": float(fid.compute()),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
        "n_real": n_real,
        "n_fake": n_fake,
        "kid_subset_size": subset,
    }


def small_set_warning(name: str, n_real: int, n_fake: int) -> str | None:
    """The warning printed beside FID when a set is too small for an unbiased estimate."""
    n = min(n_real, n_fake)
    if n >= FID_MIN_IMAGES:
        return None
    return (
        f"{name}: FID on {n_real} real / {n_fake} translated images is biased upwards (below "
        f"{FID_MIN_IMAGES} images); compare runs at equal sample counts and use KID as the "
        "primary small-set metric"
    )


def protocol(weights: ResolvedWeights, scores: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to reproduce (or refuse to compare) an FID/KID number."""
    from importlib.metadata import version

    return {
        "library": f"torchmetrics {version('torchmetrics')}",
        "extractor": f"torch-fidelity {version('torch-fidelity')} InceptionV3, pool3 2048-d",
        "input": "uint8 RGB [0, 255]",
        "resize": RESIZE,
        "kid": {
            "subsets": KID_SUBSETS,
            "subset_size": scores.get("kid_subset_size"),
            "degree": 3,
            "coef": 1.0,
        },
        "n_real": scores.get("n_real"),
        "n_fake": scores.get("n_fake"),
        **weights.protocol(),
    }
