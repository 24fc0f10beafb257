"""The evaluation's pretrained weight files: FID/KID Inception-v3 and the LPIPS backbones.

FID/KID need the 2015-12-05 TensorFlow Inception-v3 ported to PyTorch (the file pytorch-fid and
torch-fidelity use); LPIPS needs a torchvision ImageNet backbone. They are resolved by
``cyclegan.weightfiles`` (explicit path, hub cache, ``s3://``, then the public URL when
``evaluate.download`` is true), re-exported here for the evaluation modules.
"""

from __future__ import annotations

from cyclegan.weightfiles import (
    ResolvedWeights,
    WeightsError,
    WeightSpec,
    check_state_dict,
    hub_cache_path,
    load_state_dict_file,
    missing_message,
    resolve_weights,
)

__all__ = [
    "INCEPTION",
    "ResolvedWeights",
    "WeightSpec",
    "WeightsError",
    "check_state_dict",
    "hub_cache_path",
    "load_state_dict_file",
    "lpips_backbone_spec",
    "missing_message",
    "resolve_weights",
]

INCEPTION_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILENAME
)


INCEPTION = WeightSpec(
    what="FID/KID Inception-v3 weights (TF 2015-12-05 port)",
    filename=INCEPTION_FILENAME,
    url=INCEPTION_URL,
    param="evaluate.inception_weights",
)

_TORCHVISION = {  # LPIPS net name -> (torchvision builder, weights file)
    "alex": ("alexnet", "alexnet-owt-7be5be79.pth"),
    "squeeze": ("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth"),
    "vgg": ("vgg16", "vgg16-397923af.pth"),
}


def lpips_backbone_spec(net: str) -> WeightSpec:
    """The torchvision ImageNet backbone LPIPS ``net`` uses (the file torchvision caches)."""
    if net not in _TORCHVISION:
        valid = sorted(_TORCHVISION)
        raise WeightsError(f"evaluate.lpips_net: must be one of {valid}, got {net!r}")
    builder, filename = _TORCHVISION[net]
    return WeightSpec(
        what=f"LPIPS {net} backbone weights (torchvision {builder}, ImageNet)",
        filename=filename,
        url=f"https://download.pytorch.org/models/{filename}",
        param="evaluate.lpips_backbone_weights",
    )
