"""Weight files with the exact architecture and keys of the real ones, random values.

The machine running tests is offline, so the real FID Inception and LPIPS backbones cannot be
downloaded; these files exercise the same loading path (local path, hub cache, S3). Convolutions
get He-normal values so activations neither vanish nor explode through 90+ layers, which keeps
FID/KID differences between image sets meaningful.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch
from torch import nn


def _he_init(module: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2 / fan_in))
                if m.bias is not None:
                    m.bias.zero_()


def inception_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """torch-fidelity's InceptionV3 state dict (566 keys, fc 1008 classes), random values."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args: object, **kwargs: object) -> None:  # keep random init
            return None

    with tempfile.TemporaryDirectory() as tmp:  # the constructor insists on reading a file
        empty = Path(tmp) / "empty.pt"
        torch.save({}, empty)
        net = _Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    _he_init(net, seed)
    return {k: v.clone() for k, v in net.state_dict().items()}


def write_inception(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(inception_state_dict(seed), path)
    return path


def write_backbone(net: str, path: Path, seed: int = 0) -> Path:
    """torchvision's full ImageNet model state dict for an LPIPS backbone, random values."""
    import torchvision

    builder = {"alex": "alexnet", "squeeze": "squeezenet1_1", "vgg": "vgg16"}[net]
    model = getattr(torchvision.models, builder)(weights=None)
    _he_init(model, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path
