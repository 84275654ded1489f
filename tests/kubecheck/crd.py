"""Validate custom resources against the upstream CRD schemas, made strict.

Kubernetes prunes unknown fields of a custom resource silently; to catch typos we add
``additionalProperties: false`` to every object node that lists ``properties``, is not
``x-kubernetes-preserve-unknown-fields`` and has no ``additionalProperties`` of its own
(as tests/kubecheck/crds/README.md describes).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import jsonschema
import yaml

from tests.kubecheck.paths import schemas_dir

#: (apiVersion, kind) → CRD file under the schemas folder.
CRD_FILES: dict[tuple[str, str], str] = {
    ("ray.io/v1", "RayJob"): "kuberay/ray.io_rayjobs.yaml",
    ("ray.io/v1", "RayCluster"): "kuberay/ray.io_rayclusters.yaml",
    ("ray.io/v1", "RayCronJob"): "kuberay/ray.io_raycronjobs.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"):
        "monitoring/monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring/monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"):
        "monitoring/monitoring.coreos.com_prometheusrules.yaml",
}


def make_strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of an OpenAPI v3 schema that refuses unknown fields."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
                and "additionalProperties" not in node
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out


@functools.cache
def _validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    rel = CRD_FILES[(api_version, kind)]
    # The C loader: these CRDs are megabytes of YAML.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((schemas_dir() / rel).read_text(), Loader=loader)
    version = api_version.rsplit("/", 1)[1]
    matches = [v for v in crd["spec"]["versions"] if v["name"] == version]
    if not matches:
        raise KeyError(f"{rel} serves no version {version}")
    schema = make_strict(matches[0]["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def is_custom_resource(obj: dict[str, Any]) -> bool:
    return (obj.get("apiVersion"), obj.get("kind")) in CRD_FILES


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Every strict-schema violation of a custom resource, as ``path: message`` lines."""
    validator = _validator(obj["apiVersion"], obj["kind"])
    return [
        f"{obj['kind']}/{obj.get('metadata', {}).get('name')}: "
        f"{'.'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))
    ]
