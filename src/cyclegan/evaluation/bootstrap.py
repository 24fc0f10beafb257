"""Percentile bootstrap confidence intervals over images, with a fixed seed.

Every per-image metric is reported as ``mean`` with ``[lo, hi]`` at level ``ci``: the
``(1-ci)/2`` and ``(1+ci)/2`` percentiles of the means of ``resamples`` resamples (with
replacement, same size as the set). Paired differences (model vs identity baseline on the same
images) resample image indices jointly, which is the right test for "beats the baseline".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cyclegan.evaluation.errors import EvalError

_CHUNK = 2_000_000  # indices drawn per chunk: bounds memory for large sets


@dataclass(frozen=True)
class Estimate:
    """A mean with its percentile bootstrap interval (``lo``/``hi`` are None without resamples)."""

    mean: float
    lo: float | None
    hi: float | None
    n: int
    ci: float
    resamples: int

    def to_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"mean": self.mean, "n": self.n}
        if self.lo is not None and self.hi is not None:
            out.update(lo=self.lo, hi=self.hi)
        return out

    def text(self, digits: int = 4) -> str:
        if self.lo is None or self.hi is None:
            return f"{self.mean:.{digits}f} (n={self.n})"
        pct = f"{self.ci * 100:g}%"
        lo, hi = f"{self.lo:.{digits}f}", f"{self.hi:.{digits}f}"
        return f"{self.mean:.{digits}f} [{lo}, {hi}] {pct} n={self.n}"


def _as_array(values: object, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise EvalError(f"{name}: no values to bootstrap (empty image set)")
    if not np.isfinite(arr).all():
        raise EvalError(f"{name}: contains NaN or inf values; cannot form a confidence interval")
    return arr


def bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples of ``values`` (reproducible for a seed)."""
    rng = np.random.default_rng(seed)
    n = values.size
    per_chunk = max(1, _CHUNK // n)
    out = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, per_chunk):
        stop = min(resamples, start + per_chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = values[idx].mean(axis=1)
    return out


def bootstrap_ci(
    values: object, resamples: int = 1000, ci: float = 0.95, seed: int = 0, name: str = "metric"
) -> Estimate:
    """Mean of ``values`` with a percentile bootstrap interval at level ``ci``."""
    if not 0.0 < ci < 1.0:
        raise EvalError(f"{name}: ci must be in (0, 1), got {ci}")
    if resamples < 0:
        raise EvalError(f"{name}: resamples must be >= 0, got {resamples}")
    arr = _as_array(values, name)
    mean = float(arr.mean())
    if resamples == 0:
        return Estimate(mean, None, None, arr.size, ci, 0)
    means = bootstrap_means(arr, resamples, seed)
    lo, hi = np.quantile(means, [(1.0 - ci) / 2.0, (1.0 + ci) / 2.0])
    # the percentile interval always contains the mean up to float error; clamp that error away
    return Estimate(mean, float(min(lo, mean)), float(max(hi, mean)), arr.size, ci, resamples)


def paired_difference(
    a: object,
    b: object,
    resamples: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    name: str = "difference",
) -> Estimate:
    """Mean of ``a - b`` over the same images, with a paired bootstrap interval."""
    xa, xb = _as_array(a, name), _as_array(b, name)
    if xa.shape != xb.shape:
        raise EvalError(f"{name}: paired values differ in length ({xa.size} vs {xb.size})")
    return bootstrap_ci(xa - xb, resamples, ci, seed, name)
