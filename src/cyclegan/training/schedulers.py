"""Learning-rate schedules in iterations (``cfg.optim.schedule``).

Each schedule is a ``LambdaLR`` whose factor ``f(t)`` is a pure function of the iteration ``t``
(the number of ``scheduler.step()`` calls so far), so ``lr(t) = optim.lr * f(t)`` exactly and a
resumed scheduler (``state_dict`` holds ``last_epoch``) continues where it stopped.

- ``linear``: constant for ``floor(decay_start * total)`` iterations, then linear to 0 at
  ``total`` (the reference's epoch policy, in iterations).
- ``cosine``: linear warm-up ``(t + 1) / warmup_steps`` for ``t < warmup_steps``, then
  ``0.5 * (1 + cos(pi * (t - warmup) / (total - warmup)))``, 0 at ``total``.
- ``step``: ``gamma ** (t // step_size)``.
"""

from __future__ import annotations

import functools
import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from cyclegan.config import ConfigError, OptimConfig

SCHEDULES = ("linear", "cosine", "step")


def linear_factor(t: int, total: int, decay_start: float) -> float:
    n_const = int(decay_start * total)
    if t < n_const:
        return 1.0
    if t >= total:
        return 0.0
    return (total - t) / (total - n_const)


def cosine_factor(t: int, total: int, warmup: int) -> float:
    if t < warmup:
        return (t + 1) / warmup
    if t >= total:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / (total - warmup)))


def step_factor(t: int, step_size: int, gamma: float) -> float:
    return gamma ** (t // step_size)


def lr_factor(ocfg: OptimConfig, total_steps: int) -> functools.partial[float]:
    """The schedule's ``f(t)``; a partial, so LambdaLR's state_dict stays plain (``{}``)."""
    if total_steps < 1:
        raise ConfigError(f"train.steps: must be >= 1, got {total_steps}")
    if ocfg.schedule == "linear":
        return functools.partial(linear_factor, total=total_steps, decay_start=ocfg.decay_start)
    if ocfg.schedule == "cosine":
        if ocfg.warmup_steps >= total_steps:
            raise ConfigError(
                f"optim.warmup_steps: must be < train.steps ({total_steps}), "
                f"got {ocfg.warmup_steps}"
            )
        return functools.partial(cosine_factor, total=total_steps, warmup=ocfg.warmup_steps)
    if ocfg.schedule == "step":
        return functools.partial(step_factor, step_size=ocfg.step_size, gamma=ocfg.gamma)
    raise ConfigError(
        f"optim.schedule: unknown schedule {ocfg.schedule!r} (valid: {', '.join(SCHEDULES)})"
    )


def build_scheduler(optimizer: Optimizer, ocfg: OptimConfig, total_steps: int) -> LRScheduler:
    """A per-iteration scheduler: call ``scheduler.step()`` once after each optimizer step."""
    return LambdaLR(optimizer, lr_lambda=lr_factor(ocfg, total_steps))
