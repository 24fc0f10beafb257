"""The optional generator losses: values by construction, VGG weight resolution, and the
contract that each one changes the generator gradient when on and NOTHING when off."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from cyclegan.config import ConfigError, config_from_dict
from cyclegan.models import DISCRIMINATORS, build_discriminator
from cyclegan.training import extra_losses as xl
from cyclegan.training.distributed import DistInfo
from cyclegan.training.step import CycleGAN
from cyclegan.weightfiles import WeightsError

INFO = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def _img(seed: int, n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def write_vgg(path: Path, seed: int = 0) -> Path:
    """torchvision vgg16's ``features.*`` entries (real keys and shapes), random values.

    The real file also holds ``classifier.*`` (500 MB); the loader uses only ``features``.
    """
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(seed)
    feats = make_layers(cfgs["D"])
    sd = {f"features.{k}": v * 2 for k, v in feats.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return path


@pytest.fixture(autouse=True)
def _hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_ssim_matches_torchmetrics_and_bounds() -> None:
    from torchmetrics.functional.image import structural_similarity_index_measure as tm

    a, b = _img(1), (_img(1) * 0.7 + _img(2) * 0.3)
    want = tm((a + 1) / 2, (b + 1) / 2, data_range=1.0)
    assert xl.ssim(a, b).item() == pytest.approx(want.item(), abs=1e-5)
    assert xl.ssim_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert 0 < xl.ssim_loss(a, b).item() < 1


def test_fft_amplitude_ignores_circular_shifts_but_not_blur() -> None:
    a = _img(3)
    shifted = torch.roll(a, shifts=(5, 9), dims=(2, 3))
    assert (shifted - a).abs().mean() > 0.3  # pixel L1 sees a big change...
    assert xl.fft_loss(shifted, a).item() == pytest.approx(0.0, abs=1e-5)  # ...amplitudes none
    blurred = torch.nn.functional.avg_pool2d(a, 3, 1, 1, count_include_pad=False)
    assert xl.fft_loss(blurred, a).item() > 0.05  # lost high frequencies


@pytest.mark.parametrize("name", sorted(DISCRIMINATORS))
def test_discriminator_features_give_the_same_prediction(name: str) -> None:
    cfg = config_from_dict({"model": {"discriminator": name, "ndf": 4}})
    d = build_discriminator(cfg.model)
    x = _img(4, size=64)
    pred, feats = d.features(x)
    assert all(
        torch.equal(p, q)
        for p, q in zip(*((v if isinstance(v, list) else [v]) for v in (pred, d(x))), strict=True)
    )
    n_scales = cfg.model.num_scales if name == "multiscale" else 1
    per_scale = {"pixel": 2}.get(name, cfg.model.n_layers_d + 1)
    assert len(feats) == n_scales * per_scale
    assert xl.feature_matching_loss(feats, feats).item() == 0.0


def test_vgg_weights_resolve_like_the_evaluation_weights(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as e:
        xl.vgg16_features("", download=False)
    msg = str(e.value)
    assert msg.startswith(
        "VGG16 ImageNet weights for the perceptual loss (torchvision vgg16) not found: "
        "vgg16-397923af.pth. Supply it in one of three ways:\n"
        "  1. set loss.vgg_weights to a local file path"
    )
    assert msg.endswith("download: disabled (loss.vgg_download=false)")
    f = write_vgg(tmp_path / "my-vgg.pth")
    net = xl.vgg16_features(str(f))
    assert torch.equal(net[0].weight, torch.load(f)["features.0.weight"])
    assert len(net) == 16 and not any(p.requires_grad for p in net.parameters())
    sd = torch.load(f)
    sd["features.10.weight"] = sd["features.10.weight"][:, :64]
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"1 wrong shapes \['features.10.weight'\]"):
        xl.vgg16_features(str(tmp_path / "bad.pth"))


def _cfg(tmp_path: Path, **loss: object) -> object:
    return config_from_dict(
        {
            "model": {"generator": "resnet_6blocks", "ngf": 4, "ndf": 4},
            "loss": {"vgg_weights": str(tmp_path / "vgg.pth"), **loss},
            "train": {"out_dir": str(tmp_path / "run")},
        }
    )


def _g_step(cfg: object) -> tuple[dict[str, float], torch.Tensor]:
    """Generator loss terms and the flat generator gradient on fixed images."""
    torch.manual_seed(0)
    model = CycleGAN(cfg, INFO)  # type: ignore[arg-type]
    loss, terms, _ = model._generator_losses(_img(5), _img(6))
    loss.backward()
    params = [*model.g_ab.parameters(), *model.g_ba.parameters()]
    return {k: float(v.detach()) for k, v in terms.items()}, torch.cat(
        [p.grad.flatten() for p in params]
    )


LOSSES = {
    "lambda_ssim": "ssim_",
    "lambda_fft": "fft_",
    "lambda_fm": "fm_",
    "lambda_perceptual": "perc_",
}


@pytest.mark.parametrize("key", sorted(LOSSES))
def test_each_loss_changes_the_gradient_when_on_and_nothing_when_off(
    key: str, tmp_path: Path
) -> None:
    write_vgg(tmp_path / "vgg.pth")
    base_terms, base = _g_step(_cfg(tmp_path / "elsewhere"))  # no VGG file there: never read
    off_terms, off = _g_step(_cfg(tmp_path, **{key: 0.0}))
    assert torch.equal(off, base) and off_terms == base_terms  # bit-identical
    on_terms, on = _g_step(_cfg(tmp_path, **{key: 1.0}))
    on2_terms, on2 = _g_step(_cfg(tmp_path, **{key: 2.0}))
    names = sorted(k for k in on_terms if k.startswith(LOSSES[key]))
    assert len(names) == 2 and all(on_terms[n] > 0 for n in names)
    assert [on2_terms[n] for n in names] == pytest.approx([2 * on_terms[n] for n in names])
    assert {k: v for k, v in on_terms.items() if k not in names} == base_terms
    delta, delta2 = on - base, on2 - base
    assert delta.abs().max() > 1e-4 * base.abs().max()  # really changes the gradient
    # ...by exactly the term's own gradient times its weight (linear in lambda)
    torch.testing.assert_close(delta2, 2 * delta, rtol=1e-3, atol=2e-3 * delta.abs().max().item())


def test_perceptual_needs_rgb(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, lambda_perceptual=1.0)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, input_nc=1))
    with pytest.raises(ConfigError, match="loss.lambda_perceptual: the VGG16 loss needs RGB"):
        CycleGAN(cfg, INFO)
