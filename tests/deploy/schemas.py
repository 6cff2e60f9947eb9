"""Schema checks: Kubernetes objects whole, and the core parts of custom resources.

kubernetes-validate holds the OpenAPI schemas of each Kubernetes release, in strict form
(unknown fields rejected). A custom resource (ServiceMonitor, InferenceService) has no schema
there, but its metadata, label selectors, containers and volumes are core types: those parts
are validated against the same schemas, the rest is checked field by field in the tests.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import kubernetes_validate
from importlib_resources import files
from referencing import Registry, Resource

from tests.deploy.manifests import KUBERNETES_VERSION

# Prometheus Operator's duration format (the ServiceMonitor CRD's pattern for intervals).
PROMETHEUS_DURATION = re.compile(
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)


def validate_object(obj: dict[str, Any]) -> None:
    """Raises kubernetes_validate.ValidationError (or SchemaNotFoundError for a CRD)."""
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def _schema(name: str) -> Any:
    folder = files("kubernetes_validate") / "kubernetes-json-schema"
    version = f"v{KUBERNETES_VERSION}-local-strict"
    return json.loads((folder / version / name).read_text(encoding="utf-8"))


def validate_part(data: Any, type_file: str) -> None:
    """Validate a part of an object as a core type, e.g. 'container-v1', 'objectmeta-meta-v1'."""
    schema = _schema(f"{type_file}.json")
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(_schema("_definitions.json")) @ registry
    jsonschema.validators.Draft202012Validator(schema, registry=registry).validate(data)


def seconds(duration: str) -> float:
    assert PROMETHEUS_DURATION.match(duration), duration
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration))
