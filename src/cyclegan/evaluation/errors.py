"""The evaluation layer's error type: bad images, bad data layout, unusable models."""

from __future__ import annotations


class EvalError(ValueError):
    """Evaluation cannot run on this input; the message says what, where and how to fix it."""
