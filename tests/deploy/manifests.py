"""Rendering the kustomize overlays and walking the objects they produce."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from service.settings import Settings
from tests.helpers import ROOT

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu", "repository")
# The cluster version the manifests are validated against (kubernetes-validate's schemas).
KUBERNETES_VERSION = "1.32.0"

Obj = dict[str, Any]


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        raise RuntimeError(
            "kubectl is required to render deploy/k8s (it ships `kubectl kustomize`)"
        )
    return path


def render(directory: Path) -> list[Obj]:
    """`kubectl kustomize DIR`, parsed."""
    out = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{out.stderr}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def load_yaml(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"].get("name"))]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def container(workload: Obj, name: str = "cnn-serve") -> Obj:
    return next(c for c in pod_spec(workload)["containers"] if c["name"] == name)


def container_port(c: Obj, port: int | str) -> int:
    """A probe's or Service's target port, by number or by the container's port name."""
    if isinstance(port, int):
        assert any(p["containerPort"] == port for p in c.get("ports", [])), port
        return port
    return int(next(p["containerPort"] for p in c["ports"] if p.get("name") == port))


def probes(c: Obj) -> Iterator[tuple[str, Obj]]:
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        if kind in c:
            yield kind, c[kind]


def config_env(objects: list[Obj], workload: Obj) -> dict[str, str]:
    """The environment the container gets from its ConfigMaps (envFrom), as rendered."""
    env: dict[str, str] = {}
    for source in container(workload).get("envFrom", []):
        ref = source.get("configMapRef")
        if ref is not None:
            env.update(one(objects, "ConfigMap", ref["name"])["data"])
    return env


# Settings naming a folder that only a mounted volume provides in the pod (checked there by
# tests/deploy/test_manifests.py): an empty folder here stands in for it.
VOLUME_SETTINGS = ("CNN_MODEL_REPOSITORY",)


def settings_from(env: dict[str, str]) -> Settings:
    """The Settings a container with exactly this environment gets."""
    env = {k: tempfile.mkdtemp() if k in VOLUME_SETTINGS else v for k, v in env.items()}
    saved = {k: v for k, v in os.environ.items() if k.startswith("CNN_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    try:
        return Settings()
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)
