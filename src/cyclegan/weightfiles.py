"""Finding pretrained weight files without surprises: local path, hub cache, S3, then the URL.

Shared by evaluation (FID/KID Inception, LPIPS backbones) and training (the VGG16 of the
perceptual loss), so it lives at the foundation layer: neither imports the other. Resolution
order, the same for every file:

1. an explicit local path in params (the spec's ``param``, e.g. ``evaluate.inception_weights``);
2. the torch hub cache, ``torch.hub.get_dir()/checkpoints/<filename>`` (``$TORCH_HOME``);
3. an ``s3://`` URI in the same params key (downloaded once into the hub cache; the endpoint
   comes from ``AWS_ENDPOINT_URL``, so MinIO works);
4. the public URL, when downloads are allowed (the spec's ``download_param``) and the machine
   is online.

Otherwise :class:`WeightsError` names the missing file and the three ways to supply it. Every
resolved file carries its SHA-256, and ``official`` says whether it matches the hash prefix in
the reference file name (results from other files are not comparable to published numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cyclegan.storage import StorageError, download_s3_file, download_url, sha256_file


class WeightsError(RuntimeError):
    """A weight file cannot be found or is not the expected network's state dict."""


@dataclass(frozen=True)
class WeightSpec:
    """One pretrained file: what it is for, its canonical name and URL, its params key."""

    what: str
    filename: str
    url: str
    param: str
    sha256: str = ""  # the full reference hash when known (else the file name's prefix is used)
    download_param: str = "evaluate.download"  # the params key that allows step 4

    @property
    def hash_prefix(self) -> str:
        """The SHA-256 prefix torch hub puts in file names (``name-<prefix>.pth``)."""
        return Path(self.filename).stem.rsplit("-", 1)[-1]


@dataclass(frozen=True)
class ResolvedWeights:
    """A local weight file and how it was found."""

    spec: WeightSpec
    path: Path
    source: str  # param | hub-cache | s3 | url | package
    sha256: str

    @property
    def official(self) -> bool:
        """The reference file (published numbers used it), by full hash or hub name prefix."""
        if self.spec.sha256:
            return self.sha256 == self.spec.sha256
        return self.sha256.startswith(self.spec.hash_prefix)

    def protocol(self) -> dict[str, Any]:
        return {
            "weights_file": self.spec.filename,
            "weights_path": str(self.path),
            "weights_source": self.source,
            "weights_sha256": self.sha256,
            "weights_official": self.official,
        }


def hub_cache_path(filename: str) -> Path:
    """Where torch hub (and torchvision, torch-fidelity) look for ``filename``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def missing_message(spec: WeightSpec, tried: list[str]) -> str:
    """The exact text users see when a weight file cannot be found."""
    cache = hub_cache_path(spec.filename)
    lines = [
        f"{spec.what} not found: {spec.filename}. Supply it in one of three ways:",
        f"  1. set {spec.param} to a local file path, e.g. "
        f"--set {spec.param}=/path/to/{spec.filename}",
        f"  2. copy the file into the torch hub cache: {cache}",
        f"  3. set {spec.param} to an s3:// URI, e.g. s3://bucket/weights/{spec.filename} "
        "(endpoint from AWS_ENDPOINT_URL)",
        f"The file can be downloaded from {spec.url} on a machine with internet access.",
    ]
    if tried:
        lines.append("Tried: " + "; ".join(tried))
    return "\n".join(lines)


def _found(spec: WeightSpec, path: Path, source: str) -> ResolvedWeights:
    return ResolvedWeights(spec, path, source, sha256_file(path))


def _s3_uri(spec: WeightSpec, uri: str) -> str:
    return uri + spec.filename if uri.endswith("/") else uri


def _from_s3(spec: WeightSpec, uri: str) -> ResolvedWeights:
    try:
        path = download_s3_file(uri, hub_cache_path(uri.rsplit("/", 1)[-1]))
    except StorageError as e:
        raise WeightsError(f"{spec.param}={uri}: {e}\n{missing_message(spec, [])}") from e
    return _found(spec, path, "s3")


def resolve_weights(spec: WeightSpec, explicit: str = "", download: bool = True) -> ResolvedWeights:
    """Find ``spec``'s file in the documented order; raise ``WeightsError`` when it is nowhere.

    An ``s3://`` value is downloaded into the hub cache under its own file name, so the next run
    finds it there (step 2) without network access.
    """
    explicit = explicit.strip()
    if explicit and not explicit.startswith("s3://"):
        path = Path(explicit).expanduser()
        if path.is_file():
            return _found(spec, path, "param")
        raise WeightsError(
            f"{spec.param}={explicit}: file not found.\n"
            + missing_message(spec, [f"{spec.param}: {path} does not exist"])
        )
    uri = _s3_uri(spec, explicit) if explicit else ""
    cached = hub_cache_path(uri.rsplit("/", 1)[-1] if uri else spec.filename)
    if cached.is_file():
        return _found(spec, cached, "hub-cache")
    if uri:
        return _from_s3(spec, uri)
    tried = [f"hub cache: {cached} does not exist", f"{spec.param}: not set"]
    if not download:
        tried.append(f"download: disabled ({spec.download_param}=false)")
    else:
        try:
            return _found(spec, download_url(spec.url, cached), "url")
        except StorageError as e:
            tried.append(f"download {spec.url}: failed (offline?): {str(e)[:120]}")
    raise WeightsError(missing_message(spec, tried))


def load_state_dict_file(resolved: ResolvedWeights) -> dict[str, torch.Tensor]:
    """Load a plain tensor state dict (``weights_only``: no code runs from the file)."""
    try:
        sd = torch.load(resolved.path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip, pickle with code, truncated file: all mean 'unusable'
        raise WeightsError(
            f"{resolved.path}: not a readable PyTorch weights file ({type(e).__name__}: "
            f"{str(e)[:200]}). Expected {resolved.spec.filename} ({resolved.spec.what})."
        ) from e
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(
            f"{resolved.path}: expected a state dict of tensors ({resolved.spec.what}), got "
            f"{type(sd).__name__}"
        )
    return sd


def check_state_dict(
    sd: dict[str, torch.Tensor],
    reference: dict[str, torch.Tensor],
    resolved: ResolvedWeights,
) -> None:
    """Every reference key present with the same shape; else a ``WeightsError`` naming them."""
    missing = [k for k in reference if k not in sd]
    wrong = [
        f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}"
        for k, v in reference.items()
        if k in sd and sd[k].shape != v.shape
    ]
    if missing or wrong:
        detail = (f"missing keys {missing[:3]}" if missing else "") + (
            f" wrong shapes {wrong[:3]}" if wrong else ""
        )
        raise WeightsError(
            f"{resolved.path}: not {resolved.spec.what} ({len(missing)} missing keys, "
            f"{len(wrong)} wrong shapes: {detail.strip()}). Expected {resolved.spec.filename}."
        )
