"""The peers' virtualenvs (git-ignored): bench/.venv-peers (TorchServe, LitServe, py-spy) and
bench/.venv-triton (NVIDIA Triton's server through PyTriton).

Neither installs another torch: a .pth file adds the project venv's site-packages
(and so its torch, PIL and our `models` package) after the venv's own packages.
PyTriton pins numpy below 2, so its venv installs its packages before the .pth
exists: pip then resolves them alone and puts numpy 1.x in front of ours.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_PTH_NAME = "cnn_serve_shared.pth"


@dataclass(frozen=True)
class PeerEnv:
    venv: Path
    packages: tuple[str, ...]
    check: str  # imports that succeed once the venv is complete
    executables: tuple[str, ...] = ()  # files under bin/ it must also have
    alone: bool = False  # pip resolves the packages before the venv sees ours

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    def _site_packages(self) -> Path:
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        return self.venv / "lib" / version / "site-packages"

    def ready(self) -> bool:
        python = self.bin("python")
        if not python.exists() or not all(self.bin(name).exists() for name in self.executables):
            return False
        done = subprocess.run([str(python), "-c", self.check], capture_output=True)
        return done.returncode == 0

    def _share_ours(self) -> None:
        shared = sysconfig.get_paths()["purelib"]  # the project venv's site-packages
        # addsitedir, not a bare path: it also runs the .pth files there (our editable install).
        pth = self._site_packages() / _PTH_NAME
        pth.write_text(f"import site; site.addsitedir({shared!r})\n")

    def ensure(self) -> Path:
        """Create or complete the venv; returns its python."""
        if self.ready():
            return self.bin("python")
        if not self.bin("python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True)
        pth = self._site_packages() / _PTH_NAME
        if self.alone:
            pth.unlink(missing_ok=True)
        else:
            self._share_ours()
        pip = [str(self.bin("python")), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, *self.packages], check=True)
        self._share_ours()
        if not self.ready():
            raise RuntimeError(f"the venv at {self.venv} is incomplete after pip install")
        return self.bin("python")


PEERS = PeerEnv(
    ROOT / "bench" / ".venv-peers",
    ("torchserve==0.12.0", "torch-model-archiver==0.12.0", "litserve==0.2.19", "py-spy==0.4.3"),
    "import ts, model_archiver, litserve, torch, models",
    executables=("py-spy",),
)
TRITON = PeerEnv(
    ROOT / "bench" / ".venv-triton",
    ("nvidia-pytriton==0.7.0",),
    "import pytriton.triton, torch, models",
    alone=True,
)


def peer_bin(name: str) -> Path:
    return PEERS.bin(name)


def ensure_peer_env() -> Path:
    """Create or complete every peer's venv; returns the peers' python."""
    TRITON.ensure()
    return PEERS.ensure()


if __name__ == "__main__":
    print(ensure_peer_env())
