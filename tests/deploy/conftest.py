"""Rendered overlays, once per session: `kubectl kustomize` runs a few hundred milliseconds."""

from __future__ import annotations

import pytest

from tests.deploy.manifests import K8S, OVERLAYS, Obj, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Obj]]:
    return {overlay: render(K8S / "overlays" / overlay) for overlay in OVERLAYS}
