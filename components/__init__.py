"""KFP v2 components of the pipeline: :mod:`components.steps` on the project image.

``build(image)`` wraps each step with ``dsl.component(base_image=image)``; the image already holds
the project and kfp, so nothing is pip-installed when a step starts.
"""

from __future__ import annotations

from functools import cache
from types import SimpleNamespace

DEFAULT_IMAGE = "ghcr.io/cyclegan-mlops/cyclegan:0.1.0-cpu"
STEPS = ("configure", "data", "preprocess", "train", "evaluate", "export", "register", "promote")


@cache
def build(image: str = DEFAULT_IMAGE) -> SimpleNamespace:
    """The components, by step name, whose base image is ``image``."""
    from kfp import dsl

    from components import steps

    return SimpleNamespace(
        **{
            name: dsl.component(base_image=image, install_kfp_package=False)(getattr(steps, name))
            for name in STEPS
        }
    )
