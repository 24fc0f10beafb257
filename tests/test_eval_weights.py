"""Weight resolution (local path, hub cache, S3, URL) and the metrics that need weights.

The files have the exact architecture and keys of the real ones with random values (the test
machine is offline), and go through the same loading code as the real files.
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cyclegan.evaluation import fid as fidmod
from cyclegan.evaluation.errors import EvalError
from cyclegan.evaluation.lpips import load_lpips
from cyclegan.evaluation.weights import (
    INCEPTION,
    WeightsError,
    hub_cache_path,
    lpips_backbone_spec,
    resolve_weights,
)
from cyclegan.storage import s3_client, sha256_file
from tests.eval_support import write_backbone, write_inception

FILENAME = "weights-inception-2015-12-05-6726825d.pth"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private, empty torch hub cache per test, and one torch thread."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert Path(torch.hub.get_dir()) == tmp_path / "torch" / "hub"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path / "torch" / "hub"
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_inception(tmp_path_factory.mktemp("weights") / "my-inception.pth")


@pytest.fixture(scope="module")
def extractor(inception_file: Path) -> fidmod.InceptionExtractor:
    return fidmod.load_inception(explicit=str(inception_file), download=False)


def _images(n: int, seed: int, lo: int = 0, hi: int = 160) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(lo, hi, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


# --- resolution -------------------------------------------------------------------------------


def test_missing_file_gives_the_exact_message(_isolated: Path) -> None:
    cache = _isolated / "checkpoints" / FILENAME
    expected = (
        f"FID/KID Inception-v3 weights (TF 2015-12-05 port) not found: {FILENAME}. Supply it in "
        "one of three ways:\n"
        f"  1. set evaluate.inception_weights to a local file path, e.g. "
        f"--set evaluate.inception_weights=/path/to/{FILENAME}\n"
        f"  2. copy the file into the torch hub cache: {cache}\n"
        f"  3. set evaluate.inception_weights to an s3:// URI, e.g. s3://bucket/weights/{FILENAME} "
        "(endpoint from AWS_ENDPOINT_URL)\n"
        "The file can be downloaded from https://github.com/toshas/torch-fidelity/releases/"
        f"download/v0.2.0/{FILENAME} on a machine with internet access.\n"
        f"Tried: hub cache: {cache} does not exist; evaluate.inception_weights: not set; "
        "download: disabled (evaluate.download=false)"
    )
    with pytest.raises(WeightsError) as e:
        resolve_weights(INCEPTION, "", download=False)
    assert str(e.value) == expected


def test_reference_url_and_name_match_torch_fidelity() -> None:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    assert INCEPTION.url == URL_INCEPTION_V3
    assert INCEPTION.hash_prefix == "6726825d"


def test_explicit_path_missing_wrong_or_unsafe(tmp_path: Path) -> None:
    with pytest.raises(
        WeightsError,
        match=r"^evaluate.inception_weights=/nope/w.pth: file not "
        r"found.\nFID/KID Inception-v3 weights .* not found",
    ):
        resolve_weights(INCEPTION, "/nope/w.pth")
    squeeze = write_backbone("squeeze", tmp_path / "squeeze.pth")
    with pytest.raises(
        WeightsError,
        match=r"squeeze.pth: not FID/KID Inception-v3 weights .*"
        r"Missing key\(s\) in state_dict",
    ):
        fidmod.load_inception(explicit=str(squeeze))

    class Code:  # a pickle that would run code: refused by weights_only loading
        def __reduce__(self) -> tuple:
            return (os.getcwd, ())

    torch.save({"x": Code()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match=r"evil.pth: not a readable PyTorch weights file"):
        fidmod.load_inception(explicit=str(tmp_path / "evil.pth"))


def test_local_path_loads_and_is_flagged_unofficial(
    inception_file: Path, extractor: fidmod.InceptionExtractor
) -> None:
    w = extractor.weights
    assert (w.path, w.source, w.sha256) == (inception_file, "param", sha256_file(inception_file))
    assert not w.official  # random values: numbers must not be compared with published ones
    assert w.protocol()["weights_official"] is False


def test_hub_cache_is_used_without_any_setting(inception_file: Path, _isolated: Path) -> None:
    cached = _isolated / "checkpoints" / FILENAME
    cached.parent.mkdir(parents=True)
    os.link(inception_file, cached)
    w = resolve_weights(INCEPTION, "", download=False)
    assert (w.path, w.source) == (cached, "hub-cache")
    assert fidmod.load_inception(w).weights.path == cached


def test_s3_uri_downloads_once_into_the_hub_cache(
    s3_env: str, inception_file: Path, _isolated: Path
) -> None:
    client = s3_client()
    client.create_bucket(Bucket="weights")
    client.upload_file(str(inception_file), "weights", f"fid/{FILENAME}")
    w = resolve_weights(INCEPTION, "s3://weights/fid/", download=False)  # prefix form
    assert (w.source, w.path) == ("s3", _isolated / "checkpoints" / FILENAME)
    assert w.sha256 == sha256_file(inception_file)
    assert fidmod.load_inception(w).weights.sha256 == w.sha256
    client.delete_object(Bucket="weights", Key=f"fid/{FILENAME}")
    again = resolve_weights(INCEPTION, f"s3://weights/fid/{FILENAME}", download=False)
    assert again.source == "hub-cache"  # no second download (the object is gone)
    with pytest.raises(
        WeightsError,
        match=r"evaluate.inception_weights=s3://weights/nope.pth: "
        r"cannot read s3://weights/nope.pth: no object s3://weights/nope.pth at endpoint "
        r"http://127.0.0.1",
    ):
        resolve_weights(INCEPTION, "s3://weights/nope.pth")


def test_public_url_step_downloads_into_the_hub_cache(tmp_path: Path, _isolated: Path) -> None:
    served = tmp_path / "www"
    backbone = write_backbone("squeeze", served / "squeezenet1_1-b8a52dc0.pth")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = dataclasses.replace(
            lpips_backbone_spec("squeeze"),
            url=f"http://127.0.0.1:{server.server_port}/squeezenet1_1-b8a52dc0.pth",
        )
        w = resolve_weights(spec, "", download=True)
    finally:
        server.shutdown()
    assert (w.source, w.path) == ("url", hub_cache_path("squeezenet1_1-b8a52dc0.pth"))
    assert w.sha256 == sha256_file(backbone)


# --- FID / KID values -------------------------------------------------------------------------


def test_fid_closed_form_on_features() -> None:
    # fake = 2 * real: mu_f = 2 mu, S_f = 4 S
    # => FID = |mu|^2 + tr(S + 4S - 2 * 2S) = |mu|^2 + tr S
    g = torch.Generator().manual_seed(0)
    real = torch.randn(12, fidmod.FEATURE_DIM, generator=g, dtype=torch.float64) * 0.3 + 0.1
    mu, cov = real.mean(0), torch.cov(real.T)
    expected = float(mu @ mu + cov.trace())
    out = fidmod.fid_kid(real, 2 * real, kid_subset_size=1000, seed=0)
    assert out["fid"] == pytest.approx(expected, rel=1e-3)
    assert (out["n_real"], out["n_fake"], out["kid_subset_size"]) == (12, 12, 12)  # clipped
    with pytest.raises(EvalError, match="FID/KID need at least 2 images per set, got 12 real, 1"):
        fidmod.fid_kid(real, real[:1])


def test_fid_kid_on_images_identical_zero_shifted_worse(
    extractor: fidmod.InceptionExtractor,
) -> None:
    x = _images(4, 1)
    fx = extractor.features(x)
    shifted = extractor.features(x + 90)  # brighter copies: a shifted distribution
    same = fidmod.fid_kid(fx, fx, seed=0)
    worse = fidmod.fid_kid(fx, shifted, seed=0)
    assert fx.shape == (4, fidmod.FEATURE_DIM)
    assert abs(same["fid"]) < 1e-6 * worse["fid"]
    assert abs(same["kid_mean"]) < 1e-2 * worse["kid_mean"]  # unbiased MMD: ~0, may be < 0
    assert worse["fid"] > 0 and worse["kid_mean"] > 0
    assert fidmod.small_set_warning("AtoB FID", 5, 5) == (
        "AtoB FID: FID on 5 real / 5 translated images is biased upwards (below 2048 images); "
        "compare runs at equal sample counts and use KID as the primary small-set metric"
    )
    assert fidmod.small_set_warning("AtoB FID", 2048, 4000) is None
    with pytest.raises(EvalError, match="FID/KID take uint8 N×3×H×W images, got torch.float32"):
        extractor.features(x.float())


# --- LPIPS ------------------------------------------------------------------------------------


def test_lpips_matches_torchmetrics_and_checks_range(_isolated: Path) -> None:
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    write_backbone("squeeze", _isolated / "checkpoints" / "squeezenet1_1-b8a52dc0.pth")
    scorer = load_lpips("squeeze", download=False)
    g = torch.Generator().manual_seed(2)
    x, y = (torch.rand(3, 3, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    assert scorer(x, x).tolist() == [0.0, 0.0, 0.0]
    # torchmetrics' own metric finds the same backbone file in the hub cache via torchvision
    ref = LearnedPerceptualImagePatchSimilarity("squeeze", reduction="none", normalize=False)
    # same weights and ops, computed by two implementations: fp32 rounding only, relative to
    # the distance itself (its scale depends on the random inputs, not a CPU constant)
    assert scorer(x, y).numpy() == pytest.approx(ref(x, y).numpy(), rel=1e-4)
    assert scorer(x, y).min() > 0
    proto = scorer.protocol()
    assert proto["input"] == "float RGB in [-1, 1], normalize=False"
    assert (proto["backbone"]["weights_source"], proto["linear"]["weights_source"]) == (
        "hub-cache",
        "package",
    )
    assert proto["linear"]["weights_official"] is True
    msg = r"lpips input: values must lie in \[-1, 1\], got \[200.000, 200.000\]"
    with pytest.raises(EvalError, match=msg):
        scorer(x * 0 + 200, y)


def test_lpips_backbone_wrong_file_and_missing(tmp_path: Path, inception_file: Path) -> None:
    with pytest.raises(
        WeightsError,
        match=r"not LPIPS alex backbone weights .*missing keys "
        r"\['features.0.weight'",
    ):
        load_lpips("alex", backbone_weights=str(inception_file))
    with pytest.raises(
        WeightsError,
        match=r"LPIPS vgg backbone weights \(torchvision vgg16, "
        r"ImageNet\) not found: vgg16-397923af.pth",
    ):
        load_lpips("vgg", download=False)
    with pytest.raises(WeightsError, match=r"evaluate.lpips_net: must be one of"):
        load_lpips("resnet", download=False)


@pytest.mark.slow
def test_lpips_alex_default_backbone(_isolated: Path) -> None:
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    write_backbone("alex", _isolated / "checkpoints" / "alexnet-owt-7be5be79.pth")
    g = torch.Generator().manual_seed(3)
    x, y = (torch.rand(2, 3, 64, 64, generator=g) * 2 - 1 for _ in range(2))
    ref = LearnedPerceptualImagePatchSimilarity("alex", reduction="none", normalize=False)
    assert load_lpips("alex")(x, y).numpy() == pytest.approx(ref(x, y).numpy(), rel=1e-4)


def test_cache_lookup_is_by_the_canonical_file_name(_isolated: Path, tmp_path: Path) -> None:
    """A file under another name in the cache is not picked up: the name is the contract."""
    src = write_backbone("squeeze", tmp_path / "renamed.pth")
    (_isolated / "checkpoints").mkdir(parents=True)
    shutil.copy(src, _isolated / "checkpoints" / "renamed.pth")
    with pytest.raises(WeightsError, match="squeezenet1_1-b8a52dc0.pth"):
        resolve_weights(lpips_backbone_spec("squeeze"), "", download=False)
