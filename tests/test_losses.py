"""GAN losses against hand computations; the gradient penalty on linear discriminators."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cyclegan.training.losses import GANLoss, cycle_loss, gradient_penalty, identity_loss

REAL = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
FAKE = torch.tensor([[-0.5, 3.0]])


def _bce(x: float, y: float) -> float:
    p = 1 / (1 + math.exp(-x))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_lsgan_by_hand() -> None:
    loss = GANLoss("lsgan")
    assert loss(REAL, True).item() == pytest.approx(((2 - 1) ** 2 + 4 + 0.25 + 1) / 4)
    assert loss(REAL, False).item() == pytest.approx((4 + 1 + 0.25 + 0) / 4)


def test_vanilla_by_hand() -> None:
    loss = GANLoss("vanilla")
    values = [2.0, -1.0, 0.5, 0.0]
    assert loss(REAL, True).item() == pytest.approx(sum(_bce(v, 1) for v in values) / 4)
    assert loss(REAL, False).item() == pytest.approx(sum(_bce(v, 0) for v in values) / 4)


def test_hinge_by_hand() -> None:
    loss = GANLoss("hinge")
    # D, real: relu(1 - x) = [0, 2, 0.5, 1]; D, fake: relu(1 + x) = [0.5, 4]
    assert loss(REAL, True).item() == pytest.approx(3.5 / 4)
    assert loss(FAKE, False).item() == pytest.approx(4.5 / 2)
    # G: -mean(D(fake)), unbounded (no relu)
    assert loss(FAKE, True, for_discriminator=False).item() == pytest.approx(-1.25)


def test_wgangp_signs_by_hand() -> None:
    loss = GANLoss("wgangp")
    assert loss(REAL, True).item() == pytest.approx(-0.375)  # D: -mean(real)
    assert loss(FAKE, False).item() == pytest.approx(1.25)  # D: +mean(fake)
    assert loss(FAKE, True, for_discriminator=False).item() == pytest.approx(-1.25)  # G


@pytest.mark.parametrize("mode", ["lsgan", "vanilla", "hinge", "wgangp"])
def test_list_is_mean_over_scales(mode: str) -> None:
    loss = GANLoss(mode)
    combined = loss([REAL, FAKE], True)
    assert combined.item() == pytest.approx((loss(REAL, True).item() + loss(FAKE, True).item()) / 2)
    with pytest.raises(ValueError, match="empty list"):
        loss([], True)


def test_loss_is_float32_for_half_inputs() -> None:
    out = GANLoss("lsgan")(REAL.to(torch.bfloat16), True)
    assert out.dtype == torch.float32


def test_unknown_mode() -> None:
    with pytest.raises(ValueError) as e:
        GANLoss("wgan")
    assert (
        str(e.value) == "loss.gan_mode: unknown mode 'wgan' (valid: lsgan, vanilla, hinge, wgangp)"
    )


def test_l1_helpers() -> None:
    a, b = torch.tensor([1.0, -1.0, 0.5]), torch.tensor([0.0, 1.0, 0.5])
    assert cycle_loss(a, b).item() == pytest.approx(1.0)
    assert identity_loss(a, b).item() == pytest.approx(1.0)


def _linear_d(scale: float) -> nn.Module:
    """D(x) = w·x with ||w|| = scale, so ||grad_x D|| = scale everywhere."""
    lin = nn.Linear(3 * 4 * 4, 1)
    with torch.no_grad():
        w = torch.randn(1, 48, generator=torch.Generator().manual_seed(0))
        lin.weight.copy_(w / w.norm() * scale)
    return nn.Sequential(nn.Flatten(), lin)


def test_gradient_penalty_zero_for_unit_gradient() -> None:
    real, fake = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    gp = gradient_penalty(_linear_d(1.0), real, fake, 10.0, torch.Generator().manual_seed(0))
    assert gp.item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_penalty_value_and_gradient() -> None:
    real, fake = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    d = _linear_d(3.0)
    gp = gradient_penalty(d, real, fake, 10.0, torch.Generator().manual_seed(0))
    assert gp.item() == pytest.approx(10.0 * (3.0 - 1.0) ** 2, rel=1e-5)
    gp.backward()  # create_graph: the penalty trains D
    assert d[1].weight.grad is not None and d[1].weight.grad.abs().sum() > 0


def test_gradient_penalty_reproducible_and_uses_generator() -> None:
    real, fake = torch.zeros(4, 3, 4, 4), torch.ones(4, 3, 4, 4)
    # D(x) = sum(x^2)/2 has gradient x, so the norm depends on where we interpolate
    d = lambda x: (x**2).sum(dim=(1, 2, 3)) / 2  # noqa: E731

    def gp(seed: int) -> float:
        return gradient_penalty(d, real, fake, 1.0, torch.Generator().manual_seed(seed)).item()

    alpha = torch.rand(4, 1, 1, 1, generator=torch.Generator().manual_seed(5))
    x_hat_norm = (1 - alpha).flatten() * math.sqrt(48)  # ||(1 - alpha) * ones||
    assert gp(5) == pytest.approx(((x_hat_norm - 1) ** 2).mean().item(), rel=1e-5)
    assert gp(5) == gp(5)
    assert gp(5) != gp(6)


def test_gradient_penalty_multiscale_mean() -> None:
    real, fake = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    d1, d3 = _linear_d(1.0), _linear_d(3.0)
    gp = gradient_penalty(lambda x: [d1(x), d3(x)], real, fake, 1.0, torch.Generator())
    assert gp.item() == pytest.approx((0.0 + 4.0) / 2, rel=1e-5)
    with pytest.raises(ValueError, match=r"real \(2, 3, 4, 4\) and fake \(1, 3, 4, 4\) differ"):
        gradient_penalty(d1, real, fake[:1])
