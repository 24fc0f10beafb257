"""Offline validation of custom resources against the CRDs in ../shared/k8s-schemas."""

from __future__ import annotations

import copy
import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
# ../shared/k8s-schemas beside the project root; CYCLEGAN_K8S_SCHEMAS points elsewhere (worktrees)
SCHEMAS = Path(os.environ.get("CYCLEGAN_K8S_SCHEMAS", ROOT.parent / "shared" / "k8s-schemas"))
CRDS = {
    "TrainJob": "trainer.kubeflow.org_trainjobs.yaml",
    "PyTorchJob": "kubeflow.org_pytorchjobs.yaml",
    "ClusterTrainingRuntime": "trainer.kubeflow.org_clustertrainingruntimes.yaml",
    "TrainingRuntime": "trainer.kubeflow.org_trainingruntimes.yaml",
}


def _strict(node: Any) -> Any:
    """Refuse unknown fields, as `kubectl apply --validate=strict` does (the API server would
    silently drop them: a typo would vanish)."""
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@cache
def _schema(kind: str, version: str) -> dict[str, Any]:
    crd = yaml.safe_load((SCHEMAS / CRDS[kind]).read_text())
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema = copy.deepcopy(v["schema"]["openAPIV3Schema"])
            # metadata is validated by the API server itself, not by the CRD schema
            schema["properties"]["metadata"] = {"type": "object"}
            return _strict(schema)
    raise KeyError(f"{kind}: no version {version} in {CRDS[kind]}")


def crd_validate(obj: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when ``obj`` does not fit its CRD's schema."""
    import jsonschema

    version = obj["apiVersion"].split("/")[1]
    jsonschema.validate(obj, _schema(obj["kind"], version), cls=jsonschema.Draft7Validator)


K8S_VERSION = "1.33"


def k8s_validate(obj: dict[str, Any]) -> None:
    """kubernetes-validate (strict: unknown fields fail) with its schema files read once per
    session; the library re-reads its multi-megabyte definitions file on every call."""
    import kubernetes_validate.utils as kv

    if not getattr(kv.schema_contents, "cache_info", None):
        kv.schema_contents = cache(kv.schema_contents)
    kv.validate(obj, K8S_VERSION, strict=True)
