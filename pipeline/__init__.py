"""The Kubeflow pipeline: ``python -m pipeline compile|run --local|submit``; see pipeline.dag."""

from pipeline.dag import Deployment, build_pipeline

__all__ = ["Deployment", "build_pipeline"]
