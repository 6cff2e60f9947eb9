"""The Dockerfile's build commands, run in a fresh venv, give a service that answers.

The build stage runs as `docker build` would run it (see tests/deploy/dockerfile.py), with
VARIANT=cpu and the torch layer lent from this checkout (tests/deploy/torch_layer.py); then
the runtime stage's ENTRYPOINT starts with the runtime stage's environment, its HEALTHCHECK
command is run, and nothing outside the image's /tmp may have changed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.deploy import torch_layer
from tests.deploy.dockerfile import BeforeRun, Builder, Image, host_env, parse
from tests.helpers import ROOT, Digits, free_port

pytestmark = pytest.mark.slow


def _lend_torch_layer(layer: Path) -> BeforeRun:
    def before_run(command: str, env: dict[str, str]) -> None:
        if "-r torch.txt" in command:
            torch_layer.lend_to(Path(env["VIRTUAL_ENV"]), layer)

    return before_run


def _tree(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in root.rglob("*")
        if skip not in p.parents and p != skip
    }


@contextmanager
def _entrypoint(image: Image, port: int, log: Path) -> Iterator[str]:
    assert image.entrypoint is not None
    env = {**image.env, "CNN_HOST": "127.0.0.1", "CNN_PORT": str(port), "CNN_TORCH_THREADS": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            image.entrypoint, cwd=image.workdir, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text(errors="replace")
            try:
                if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=60)


def _healthcheck(image: Image, port: int) -> int:
    assert image.healthcheck is not None
    env = {**image.env, "CNN_PORT": str(port)}
    return subprocess.run(image.healthcheck, env=env, capture_output=True, timeout=30).returncode


def test_dockerfile_build_steps_give_a_working_service(tmp_path: Path, digits: Digits) -> None:
    root = tmp_path / "image"
    # This interpreter (not a venv's) stands for the base image's python3.
    base_python = str(Path(getattr(sys, "_base_executable", sys.executable)).parent)
    builder = Builder(
        parse(ROOT / "Dockerfile"),
        context=ROOT,
        root=root,
        build_args={"VARIANT": "cpu"},
        base_env={**host_env(), "PATH": f"{base_python}:{os.environ['PATH']}"},
        before_run=_lend_torch_layer(tmp_path / "torch-layer"),
        # The torch lent from this checkout is whichever build this machine has (often CUDA):
        # test_dockerfile.py runs that check against a CPU and a CUDA torch instead.
        skip_run=lambda command: "torch.version.cuda" in command,
    )
    image = builder.build("runtime")
    assert not [key for key in image.env if key.startswith("TORCH_") and "INDEX" in key]

    deps_log = next(log for command, log in image.logs if "-r torch.txt" in command)
    assert "download.pytorch.org/whl/cpu" in deps_log  # the CPU variant's index was passed
    assert "Requirement already satisfied: torch==2.14.1" in deps_log
    assert "Successfully installed" in deps_log  # fastapi, uvicorn, ... into the fresh venv
    venv = root / "opt" / "venv"
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import service, models; print(service.__file__); "
         "print(models.default_model_path())"],
        env=image.env, cwd=image.workdir, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert all(Path(p).is_relative_to(venv) for p in where), where  # installed, not the checkout
    assert Path(where[1]).with_suffix(".pt").is_file()  # the shipped model is baked in

    tmp = root / "tmp"
    before = _tree(root, skip=tmp)
    port = free_port()
    with _entrypoint(image, port, tmp_path / "server.log") as base_url:
        answer = httpx.post(
            f"{base_url}/v1/classify",
            content=digits.png(3),
            headers={"content-type": "image/png"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0]["label"] == str(digits.labels[3])
        assert _healthcheck(image, port) == 0
    assert _healthcheck(image, port) != 0  # and it notices a server that is gone
    assert _tree(root, skip=tmp) == before  # nothing written outside /tmp
