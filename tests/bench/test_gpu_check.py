"""bench/gpu_check.sh refuses clearly, with exit code 3, where no CUDA GPU can be used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _fake_nvidia_smi(folder: Path, *, works: bool) -> None:
    tool = folder / "nvidia-smi"
    tool.write_text("#!/bin/sh\necho 'GPU 0: Fake GPU'\n" if works else "#!/bin/sh\nexit 9\n")
    tool.chmod(0o755)


def _run(tmp_path: Path, path: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": path,
        "PYTHON": sys.executable,
        "OUT": str(tmp_path / "out"),
        "CUDA_VISIBLE_DEVICES": "",  # even on a GPU machine, torch sees none here
    }
    return subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_refuses_without_nvidia_smi(tmp_path: Path) -> None:
    done = _run(tmp_path, "/usr/bin:/bin")
    assert done.returncode == 3
    assert "no NVIDIA GPU here (nvidia-smi not found)" in done.stderr
    assert not (tmp_path / "out").exists()  # nothing ran


def test_refuses_when_nvidia_smi_finds_no_gpu(tmp_path: Path) -> None:
    _fake_nvidia_smi(tmp_path, works=False)
    done = _run(tmp_path, f"{tmp_path}:/usr/bin:/bin")
    assert done.returncode == 3
    assert "nvidia-smi finds no GPU" in done.stderr


def test_refuses_when_torch_sees_no_cuda_device(tmp_path: Path) -> None:
    _fake_nvidia_smi(tmp_path, works=True)
    done = _run(tmp_path, f"{tmp_path}:/usr/bin:/bin")
    assert done.returncode == 3
    assert "torch sees no CUDA device" in done.stderr
    assert "runs only on a machine with a CUDA GPU" in done.stderr
    assert not (tmp_path / "out").exists()
