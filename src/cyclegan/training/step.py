"""The CycleGAN update: one ``train_step`` that returns every loss term as a dict.

Naming: ``G_AB`` maps A to B, ``G_BA`` maps B to A; ``D_A`` judges domain-A images (real A vs
``G_BA(B)``), ``D_B`` judges domain-B images. Generators are called inside one module
(``GeneratorPair``) and discriminators inside another (``DiscriminatorPair``) so that under DDP
each wrapper runs one forward per step, which DDP requires.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from cyclegan.config import Config, ConfigError
from cyclegan.models import build_discriminator, build_generator, reverse_model
from cyclegan.training import distributed, precision
from cyclegan.training import extra_losses as xl
from cyclegan.training.distributed import DistInfo
from cyclegan.training.losses import GANLoss, cycle_loss, gradient_penalty, identity_loss
from cyclegan.training.pool import ImagePool
from cyclegan.training.schedulers import build_scheduler


def resolve_amp(amp: str, device: torch.device, cfg: Config | None = None) -> str:
    """An explicit ``amp`` as is; ``auto`` = what the precision probe measured fastest on this
    machine for ``cfg``'s networks (the default config's when None; see training.precision)."""
    if amp != "auto":
        return amp
    from cyclegan.training.precision import precision_report

    return precision_report(cfg or Config(), device)["auto"]


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/Inf: the step is not applied and the run stops."""


class GeneratorPair(nn.Module):
    """Both generators, all their forwards (translation, cycle, identity) in one call."""

    def __init__(self, g_ab: nn.Module, g_ba: nn.Module) -> None:
        super().__init__()
        self.g_ab, self.g_ba = g_ab, g_ba

    def forward(self, real_a: Tensor, real_b: Tensor, identity: bool) -> dict[str, Tensor]:
        fake_b = self.g_ab(real_a)
        fake_a = self.g_ba(real_b)
        out = {"fake_b": fake_b, "rec_a": self.g_ba(fake_b), "fake_a": fake_a}
        out["rec_b"] = self.g_ab(fake_a)
        if identity:
            out["idt_b"] = self.g_ab(real_b)  # G_AB should leave a B image unchanged
            out["idt_a"] = self.g_ba(real_a)
        return out


class DiscriminatorPair(nn.Module):
    """Both discriminators on real and (pooled) fake images, plus the optional gradient penalty."""

    def __init__(self, d_a: nn.Module, d_b: nn.Module, gp_weight: float) -> None:
        super().__init__()
        self.d_a, self.d_b, self.gp_weight = d_a, d_b, gp_weight

    def forward(
        self, real_a: Tensor, fake_a: Tensor, real_b: Tensor, fake_b: Tensor, gen: Any = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "real_a": self.d_a(real_a),
            "fake_a": self.d_a(fake_a),
            "real_b": self.d_b(real_b),
            "fake_b": self.d_b(fake_b),
        }
        if self.gp_weight > 0:
            out["gp_a"] = gradient_penalty(self.d_a, real_a, fake_a, self.gp_weight, generator=gen)
            out["gp_b"] = gradient_penalty(self.d_b, real_b, fake_b, self.gp_weight, generator=gen)
        return out


def _set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def _float(x: Any) -> Any:
    return [t.float() for t in x] if isinstance(x, list | tuple) else x.float()


class CycleGAN:
    """Networks, optimisers, schedulers, scaler and pools: everything a checkpoint holds."""

    def __init__(self, cfg: Config, info: DistInfo) -> None:
        self.cfg, self.info, dev = cfg, info, info.device
        m = cfg.model
        self.g_ab, self.g_ba = build_generator(m), build_generator(reverse_model(m))
        self.d_a = build_discriminator(m, input_nc=m.input_nc)
        self.d_b = build_discriminator(m, input_nc=m.output_nc)
        # explicit settings as given; ``auto`` ones measured (cached per machine)
        self.amp, channels_last, self.precision = precision.resolve(cfg, info)
        fmt = torch.channels_last if channels_last else torch.preserve_format
        self.memory_format = fmt
        for net in self.nets.values():
            net.to(dev, memory_format=self.memory_format)
        gp = cfg.loss.lambda_gp if cfg.loss.gan_mode == "wgangp" else 0.0
        gen_pair: nn.Module = GeneratorPair(self.g_ab, self.g_ba)
        disc_pair: nn.Module = DiscriminatorPair(self.d_a, self.d_b, gp)
        if cfg.train.compile:
            gen_pair, disc_pair = torch.compile(gen_pair), torch.compile(disc_pair)
        self.gen, self.disc = distributed.wrap(gen_pair, info), distributed.wrap(disc_pair, info)

        o = cfg.optim
        g_params = [*self.g_ab.parameters(), *self.g_ba.parameters()]
        d_params = [*self.d_a.parameters(), *self.d_b.parameters()]
        self.opt_g = torch.optim.Adam(g_params, lr=o.lr, betas=(o.beta1, o.beta2))
        self.opt_d = torch.optim.Adam(d_params, lr=o.lr, betas=(o.beta1, o.beta2))
        self.sched_g = build_scheduler(self.opt_g, o, cfg.train.steps)
        self.sched_d = build_scheduler(self.opt_d, o, cfg.train.steps)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.amp == "fp16")
        seed = cfg.seed * 1000 + info.rank
        self.pool_a = ImagePool(cfg.loss.pool_size, seed=seed + 1)
        self.pool_b = ImagePool(cfg.loss.pool_size, seed=seed + 2)
        self.gp_gen = torch.Generator(device=dev).manual_seed(seed + 3)
        self.gan_loss = GANLoss(cfg.loss.gan_mode)
        self.use_identity = cfg.loss.lambda_identity > 0 and m.input_nc == m.output_nc
        self.perceptual = None
        if cfg.loss.lambda_perceptual > 0:  # resolved at start: a missing file fails now
            if (m.input_nc, m.output_nc) != (3, 3):
                raise ConfigError(
                    "loss.lambda_perceptual: the VGG16 loss needs RGB images, but "
                    f"model.input_nc={m.input_nc} and model.output_nc={m.output_nc}; set it to 0"
                )
            vgg = xl.vgg16_features(cfg.loss.vgg_weights, cfg.loss.vgg_download)
            self.perceptual = xl.PerceptualLoss(vgg).to(dev)

    @property
    def nets(self) -> dict[str, nn.Module]:
        return {"G_AB": self.g_ab, "G_BA": self.g_ba, "D_A": self.d_a, "D_B": self.d_b}

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)
        with torch.autocast(self.info.device.type, dtype=dtype, enabled=dtype is not None):
            yield

    def _check_finite(self, loss: Tensor, name: str) -> None:
        bad = not bool(torch.isfinite(loss.detach()).item())
        if distributed.broadcast_flag(self.info, bad):
            raise NonFiniteLossError(f"{name} loss is not finite; the step was not applied")

    def _generator_losses(self, real_a: Tensor, real_b: Tensor) -> tuple[Tensor, dict, dict]:
        lc = self.cfg.loss
        with self._autocast():
            out = self.gen(real_a, real_b, self.use_identity)
            # The G step goes through the plain discriminators: their weights are frozen here.
            if lc.lambda_fm > 0:
                (pred_b, fm_b), (pred_a, fm_a) = (
                    self.d_b.features(out["fake_b"]),
                    self.d_a.features(out["fake_a"]),
                )
            else:
                pred_b, pred_a = self.d_b(out["fake_b"]), self.d_a(out["fake_a"])
        terms = {
            "G_AB": self.gan_loss(_float(pred_b), True, for_discriminator=False),
            "G_BA": self.gan_loss(_float(pred_a), True, for_discriminator=False),
            "cycle_A": cycle_loss(out["rec_a"], real_a) * lc.lambda_A,
            "cycle_B": cycle_loss(out["rec_b"], real_b) * lc.lambda_B,
        }
        if self.use_identity:
            w = lc.lambda_identity
            terms["idt_B"] = identity_loss(out["idt_b"], real_b) * lc.lambda_B * w
            terms["idt_A"] = identity_loss(out["idt_a"], real_a) * lc.lambda_A * w
        if lc.lambda_fm > 0:
            with torch.no_grad(), self._autocast():
                real_fm_b, real_fm_a = self.d_b.features(real_b)[1], self.d_a.features(real_a)[1]
            terms["fm_B"] = xl.feature_matching_loss(fm_b, real_fm_b) * lc.lambda_fm
            terms["fm_A"] = xl.feature_matching_loss(fm_a, real_fm_a) * lc.lambda_fm
        terms.update(self._optional_terms(real_a, real_b, out))
        return sum(terms.values()), terms, out  # type: ignore[return-value]

    def _optional_terms(self, real_a: Tensor, real_b: Tensor, out: dict) -> dict[str, Tensor]:
        """SSIM / FFT on the cycle reconstructions and the perceptual loss, each when > 0."""
        lc, terms = self.cfg.loss, {}
        if lc.lambda_ssim > 0:
            terms["ssim_A"] = xl.ssim_loss(out["rec_a"], real_a) * lc.lambda_ssim
            terms["ssim_B"] = xl.ssim_loss(out["rec_b"], real_b) * lc.lambda_ssim
        if lc.lambda_fft > 0:
            terms["fft_A"] = xl.fft_loss(out["rec_a"], real_a) * lc.lambda_fft
            terms["fft_B"] = xl.fft_loss(out["rec_b"], real_b) * lc.lambda_fft
        if self.perceptual is not None:
            with self._autocast():
                p_b = self.perceptual(out["fake_b"], real_a, real_b)
                p_a = self.perceptual(out["fake_a"], real_b, real_a)
            terms["perc_B"] = p_b.float() * lc.lambda_perceptual
            terms["perc_A"] = p_a.float() * lc.lambda_perceptual
        return terms

    def _discriminator_losses(self, real_a: Tensor, real_b: Tensor, out: dict) -> tuple:
        fake_a = self.pool_a.query(out["fake_a"].detach())
        fake_b = self.pool_b.query(out["fake_b"].detach())
        with self._autocast():
            p = self.disc(real_a, fake_a, real_b, fake_b, self.gp_gen)
        gl = self.gan_loss
        terms = {
            "D_A": 0.5 * (gl(_float(p["real_a"]), True) + gl(_float(p["fake_a"]), False)),
            "D_B": 0.5 * (gl(_float(p["real_b"]), True) + gl(_float(p["fake_b"]), False)),
        }
        if "gp_a" in p:
            terms["gp_A"], terms["gp_B"] = p["gp_a"].float(), p["gp_b"].float()
        return sum(terms.values()), terms

    def train_step(self, real_a: Tensor, real_b: Tensor) -> dict[str, float]:
        """One generator update then one discriminator update; returns every loss term."""
        real_a = real_a.to(self.info.device, non_blocking=True).contiguous(
            memory_format=self.memory_format
        )
        real_b = real_b.to(self.info.device, non_blocking=True).contiguous(
            memory_format=self.memory_format
        )
        _set_requires_grad([self.d_a, self.d_b], False)
        loss_g, g_terms, out = self._generator_losses(real_a, real_b)
        self._check_finite(loss_g, "generator")
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(loss_g).backward()
        self.scaler.step(self.opt_g)

        _set_requires_grad([self.d_a, self.d_b], True)
        loss_d, d_terms = self._discriminator_losses(real_a, real_b, out)
        self._check_finite(loss_d, "discriminator")
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(loss_d).backward()
        self.scaler.step(self.opt_d)
        self.scaler.update()
        self.sched_g.step()
        self.sched_d.step()
        losses = {k: float(v.detach()) for k, v in {**g_terms, **d_terms}.items()}
        losses["G"], losses["D"] = float(loss_g.detach()), float(loss_d.detach())
        return losses

    def lr(self) -> float:
        return float(self.opt_g.param_groups[0]["lr"])

    # --- checkpoint state ------------------------------------------------------------------

    def rank_state(self) -> dict[str, Any]:
        """What differs between DDP ranks: the history pools and the penalty RNG."""
        return {
            "pools": {"A": self.pool_a.state_dict(), "B": self.pool_b.state_dict()},
            "gp_rng": self.gp_gen.get_state(),
        }

    def load_rank_state(self, state: dict[str, Any]) -> None:
        self.pool_a.load_state_dict(state["pools"]["A"])
        self.pool_b.load_state_dict(state["pools"]["B"])
        self.gp_gen.set_state(state["gp_rng"])

    def state_dict(self) -> dict[str, Any]:
        """Shared state (identical on every rank after each step) plus this rank's own."""
        return {
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "optimizers": {"G": self.opt_g.state_dict(), "D": self.opt_d.state_dict()},
            "schedulers": {"G": self.sched_g.state_dict(), "D": self.sched_d.state_dict()},
            "scaler": self.scaler.state_dict(),
            **self.rank_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, net in self.nets.items():
            net.load_state_dict(state["nets"][k])
        self.opt_g.load_state_dict(state["optimizers"]["G"])
        self.opt_d.load_state_dict(state["optimizers"]["D"])
        self.sched_g.load_state_dict(state["schedulers"]["G"])
        self.sched_d.load_state_dict(state["schedulers"]["D"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.load_rank_state(state)
