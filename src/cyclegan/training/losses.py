"""Adversarial, cycle and identity losses (``cfg.loss``).

GAN modes: ``lsgan`` (MSE to 1/0, the CycleGAN default), ``vanilla`` (BCE with logits),
``hinge`` (D: relu(1 - real) + relu(1 + fake); G: -fake) and ``wgangp`` (D: fake - real plus
``gradient_penalty``; G: -fake). Losses are computed in float32 so AMP runs stay stable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

GAN_MODES = ("lsgan", "vanilla", "hinge", "wgangp")

Prediction = torch.Tensor | Sequence[torch.Tensor]


class GANLoss(nn.Module):
    """``loss(pred, target_is_real, for_discriminator=True)``; ``pred`` may be a list of scales.

    With a list (the multiscale discriminator) the loss is the mean of the per-scale losses.
    ``for_discriminator`` matters only for ``hinge``, whose generator loss is ``-mean(fake)``.
    """

    def __init__(self, mode: str = "lsgan"):
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(
                f"loss.gan_mode: unknown mode {mode!r} (valid: {', '.join(GAN_MODES)})"
            )
        self.mode = mode

    def _single(
        self, pred: torch.Tensor, target_is_real: bool, for_discriminator: bool
    ) -> torch.Tensor:
        pred = pred.float()
        if self.mode == "lsgan":
            target = torch.ones_like(pred) if target_is_real else torch.zeros_like(pred)
            return F.mse_loss(pred, target)
        if self.mode == "vanilla":
            target = torch.ones_like(pred) if target_is_real else torch.zeros_like(pred)
            return F.binary_cross_entropy_with_logits(pred, target)
        if self.mode == "hinge" and for_discriminator:
            return F.relu(1 - pred).mean() if target_is_real else F.relu(1 + pred).mean()
        # wgangp (D and G) and the hinge generator loss: raise real scores, lower fake ones
        return -pred.mean() if target_is_real else pred.mean()

    def forward(
        self, pred: Prediction, target_is_real: bool, for_discriminator: bool = True
    ) -> torch.Tensor:
        preds = [pred] if isinstance(pred, torch.Tensor) else list(pred)
        if not preds:
            raise ValueError("GANLoss: got an empty list of discriminator outputs")
        losses = [self._single(p, target_is_real, for_discriminator) for p in preds]
        return torch.stack(losses).mean()


def cycle_loss(reconstructed: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L1 between ``G_BA(G_AB(a))`` and ``a`` (weighted by lambda_A / lambda_B by the caller)."""
    return F.l1_loss(reconstructed.float(), real.float())


def identity_loss(same: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L1 between ``G_AB(b)`` and ``b`` (weighted by lambda_identity * lambda_B by the caller)."""
    return F.l1_loss(same.float(), real.float())


def gradient_penalty(
    discriminator: Callable[[torch.Tensor], Prediction],
    real: torch.Tensor,
    fake: torch.Tensor,
    lambda_gp: float = 10.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP: ``lambda_gp * mean((||grad D(x_hat)||_2 - 1)^2)`` on random interpolates.

    The interpolation weights come from ``generator`` (any device; moved to the data's) so a
    seeded run is reproducible. For a multiscale discriminator the penalty is averaged over
    scales.
    """
    if real.shape != fake.shape:
        raise ValueError(
            f"gradient_penalty: real {tuple(real.shape)} and fake {tuple(fake.shape)} differ"
        )
    gen_device = generator.device if generator is not None else real.device
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=generator, device=gen_device)
    alpha = alpha.to(device=real.device, dtype=real.dtype)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = discriminator(x_hat)
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    penalties = []
    for o in outs:
        (grad,) = torch.autograd.grad(o.float().sum(), x_hat, create_graph=True)
        norm = (grad.float().flatten(1) + 1e-16).norm(2, dim=1)
        penalties.append(((norm - 1.0) ** 2).mean())
    return lambda_gp * torch.stack(penalties).mean()
