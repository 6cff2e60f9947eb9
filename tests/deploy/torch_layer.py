"""The torch layer of the image, lent from this checkout's venv instead of reinstalled.

The Dockerfile installs torch and torchvision (with everything they depend on) in one pip
command. Unpacking those wheels again costs about 5.5 GB and minutes; the bytes would be the
same ones this venv installed from the same pins. So the fresh venv gets a .pth file naming a
directory of links to exactly that dependency closure, and the Dockerfile's pip command then
runs for real against it: it resolves the pins in pyproject.toml and constraints.txt, passes
the variant's index options, and must find every requirement satisfied. Every other
dependency and the package itself are installed into the fresh venv for real.
"""

from __future__ import annotations

import importlib.metadata as metadata
import sysconfig
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LAYER_ROOTS = ("torch", "torchvision")


def closure(roots: tuple[str, ...] = LAYER_ROOTS) -> list[metadata.Distribution]:
    """The installed distributions `pip install roots` pulls in, markers and extras evaluated."""
    seen: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()
    pending: list[tuple[str, str]] = [(root, "") for root in roots]
    while pending:
        name, extra = pending.pop()
        key = (canonicalize_name(name), extra)
        if key in done:
            continue
        done.add(key)
        dist = seen.setdefault(key[0], metadata.distribution(key[0]))
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                pending.append((requirement.name, ""))
                pending.extend((requirement.name, e) for e in requirement.extras)
    return list(seen.values())


def link_layer(directory: Path) -> list[str]:
    """Fill `directory` with links to the closure's top-level files; returns its names."""
    directory.mkdir(parents=True, exist_ok=True)
    names = []
    for dist in closure():
        names.append(str(dist.metadata["Name"]))
        site = Path(str(dist.locate_file("")))
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
            link = directory / top
            if not link.exists() and (site / top).exists():
                link.symlink_to(site / top)
    return sorted(names)


def lend_to(venv: Path, directory: Path) -> list[str]:
    """Make the closure importable (and visible to pip) in `venv`; returns the names lent."""
    names = link_layer(directory)
    purelib = sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
    (Path(purelib) / "torch-layer.pth").write_text(f"{directory}\n", encoding="utf-8")
    return names
