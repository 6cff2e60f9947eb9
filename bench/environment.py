"""What the benchmark ran on: the machine and the versions of everything measured."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

from bench.peers.env import PEERS, TRITON, PeerEnv

OUR_PACKAGES = (
    *("cnn-serve", "torch", "torchvision", "fastapi", "starlette", "uvicorn"),
    *("pydantic", "pillow", "numpy", "python-multipart", "orjson"),
)
PEER_PACKAGES = ("torchserve", "torch-model-archiver", "litserve", "py-spy")
# Triton's venv keeps its own numpy (PyTriton pins it below 2) in front of ours.
TRITON_PACKAGES = {"nvidia-pytriton": "nvidia-pytriton", "numpy": "numpy (Triton's venv)"}


def _cpuinfo_value(key: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine_info() -> dict[str, object]:
    flags = set(_cpuinfo_value("flags").split())
    simd = sorted(f for f in flags if f.startswith(("avx512_bf16", "amx", "avx512f", "avx2")))
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "CPU": _cpuinfo_value("model name"),
        "cores available": cores,
        "CPU features (SIMD)": " ".join(simd) or "none listed",
        "memory": f"{mem_kb / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "load average at the start (1, 5, 15 min)": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _run_text(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _peer_versions(env: PeerEnv, names: dict[str, str]) -> dict[str, str]:
    """The versions of these packages in a peer's venv, under their names in the report."""
    script = (
        "import importlib.metadata as m, json; "
        f"print(json.dumps({{p: m.version(p) for p in {list(names)!r}}}))"
    )
    text = _run_text([str(env.bin("python")), "-c", script])
    try:
        found = json.loads(text)
    except json.JSONDecodeError:
        found = {}
    return {shown: str(found.get(package, "unknown")) for package, shown in names.items()}


def versions(hey: str) -> dict[str, str]:
    found = {"python": platform.python_version()}
    found.update({p: _version(p) for p in OUR_PACKAGES})
    found.update(_peer_versions(PEERS, {p: p for p in PEER_PACKAGES}))
    found.update(_peer_versions(TRITON, TRITON_PACKAGES))
    found["hey (Debian)"] = _run_text(["dpkg-query", "-W", "-f", "${Version}", "hey"])
    found["hey path"] = hey
    found["java"] = _run_text(["java", "-version"])
    return found
