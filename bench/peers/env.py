"""The peers' virtualenv (bench/.venv-peers, git-ignored): TorchServe, LitServe, py-spy.

It shares the project's torch instead of installing another copy: a .pth file
adds the project venv's site-packages (and so its torch, PIL and our `models`
package) after the peers' own packages.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

PEER_PACKAGES = (
    "torchserve==0.12.0",
    "torch-model-archiver==0.12.0",
    "litserve==0.2.19",
    "py-spy==0.4.3",
)
ROOT = Path(__file__).resolve().parents[2]
PEER_VENV = ROOT / "bench" / ".venv-peers"
_PTH_NAME = "cnn_serve_shared.pth"


def peer_bin(name: str) -> Path:
    return PEER_VENV / "bin" / name


def _site_packages(venv: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages"


def _ready() -> bool:
    python = peer_bin("python")
    if not python.exists() or not peer_bin("py-spy").exists():
        return False
    check = "import ts, model_archiver, litserve, torch, models"
    return subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0


def ensure_peer_env() -> Path:
    """Create or complete the peers' venv; returns its python."""
    if _ready():
        return peer_bin("python")
    if not peer_bin("python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    shared = sysconfig.get_paths()["purelib"]  # the project venv's site-packages
    # addsitedir, not a bare path: it also runs the .pth files there (our editable install).
    pth = _site_packages(PEER_VENV) / _PTH_NAME
    pth.write_text(f"import site; site.addsitedir({shared!r})\n")
    pip = [str(peer_bin("python")), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *PEER_PACKAGES], check=True)
    if not _ready():
        raise RuntimeError(f"the peers' venv at {PEER_VENV} is incomplete after pip install")
    return peer_bin("python")


if __name__ == "__main__":
    print(ensure_peer_env())
