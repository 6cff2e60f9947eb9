"""A model repository on disk: named models, each in numbered versions, as Triton lays them out.

    DIR/<name>/<version>/<card>.json   the card and its weights, as save_checkpoint writes them
    DIR/<name>/config.json             optional: which versions to serve

A version is a folder named by a positive decimal integer without leading zeros
("1", "2", "10"); anything else in a model's folder ("01", "v2", files,
".tmp-..." folders) is not a version, and model folders starting with "." are
skipped. Versions order as numbers, so "10" is newer than "2".

config.json holds Triton's version_policy, in JSON; without it, the latest version is served:

    {"version_policy": {"latest": {"num_versions": 2}}}
    {"version_policy": {"all": {}}}
    {"version_policy": {"specific": {"versions": [1, 3]}}}

A config that cannot be read leaves the model with a `config_error` and nothing
wanted, so a typo never unloads what is being served.

`publish_version` fills a hidden temporary folder and renames it to the next
number: a rename within one file system is atomic, so a poller scanning the
repository sees either no version or a whole one, never one half written.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from models.card import CARD_SUFFIX

MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CONFIG_FILE = "config.json"
_VERSION = re.compile(r"[1-9][0-9]*")  # [0-9], not \d: no other scripts' digits
# What os.rename reports when its target is already there (a folder with files, or a file).
_TAKEN = {errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR}


class RepositoryError(ValueError):
    """The repository, or a model in it, is not where or what it should be."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which of a model's versions to serve."""

    kind: Literal["latest", "all", "specific"]
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: Iterable[int]) -> tuple[int, ...]:
        """The versions to serve out of `available`, ascending."""
        present = sorted(set(available))
        if self.kind == "latest":
            return tuple(present[-self.num_versions :])
        if self.kind == "all":
            return tuple(present)
        return tuple(v for v in present if v in self.versions)

    def describe(self) -> str:
        if self.kind == "latest":
            return f"latest {self.num_versions}"
        if self.kind == "all":
            return "all"
        return "specific " + ", ".join(str(v) for v in self.versions)


LATEST = VersionPolicy("latest")


@dataclass(frozen=True)
class RepositoryVersion:
    version: int
    folder: Path
    card: Path | None
    error: str | None  # why this folder cannot be served: no card, or several


@dataclass(frozen=True)
class RepositoryModel:
    name: str
    folder: Path
    versions: dict[int, RepositoryVersion]  # every version folder, servable or not
    policy: VersionPolicy
    config_error: str | None = None

    def wanted(self) -> tuple[int, ...]:
        """The versions to serve: the policy's pick among those with a single card."""
        if self.config_error is not None:
            return ()
        return self.policy.select(v for v, found in self.versions.items() if found.error is None)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _policy(body: Any) -> VersionPolicy:
    """The policy a parsed config.json asks for; ValueError says what is wrong with it."""
    if not isinstance(body, dict) or set(body) - {"version_policy"}:
        raise ValueError('expected an object with only the key "version_policy"')
    if "version_policy" not in body:
        return LATEST
    policy = body["version_policy"]
    if not isinstance(policy, dict) or len(policy) != 1:
        raise ValueError('version_policy must hold one of "latest", "all" or "specific"')
    ((kind, args),) = policy.items()
    if kind == "latest" and isinstance(args, dict) and set(args) <= {"num_versions"}:
        count = args.get("num_versions", 1)
        if not _is_positive_int(count):
            raise ValueError(f"latest.num_versions must be an integer >= 1, got {count!r}")
        return VersionPolicy("latest", num_versions=count)
    if kind == "all" and args == {}:
        return VersionPolicy("all")
    if kind == "specific" and isinstance(args, dict) and set(args) == {"versions"}:
        versions = args["versions"]
        if not (isinstance(versions, list) and versions and all(map(_is_positive_int, versions))):
            raise ValueError(f"specific.versions must list integers >= 1, got {versions!r}")
        return VersionPolicy("specific", versions=tuple(sorted(set(versions))))
    raise ValueError(f"unknown or malformed version policy {kind!r}: {args!r}")


def _read_config(folder: Path) -> tuple[VersionPolicy, str | None]:
    path = folder / CONFIG_FILE
    if not path.exists():
        return LATEST, None
    try:
        return _policy(json.loads(path.read_text(encoding="utf-8"))), None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        return LATEST, f"{path}: {exc}"


def _version_folders(folder: Path) -> dict[int, Path]:
    return {
        int(entry.name): entry
        for entry in folder.iterdir()
        if _VERSION.fullmatch(entry.name) and entry.is_dir()
    }


def _version(number: int, folder: Path) -> RepositoryVersion:
    cards = sorted(p for p in folder.glob(f"*{CARD_SUFFIX}") if p.is_file())
    if len(cards) == 1:
        return RepositoryVersion(number, folder, cards[0], None)
    if not cards:
        return RepositoryVersion(
            number, folder, None, f"no model card (*{CARD_SUFFIX}) in {folder}"
        )
    names = ", ".join(p.name for p in cards)
    return RepositoryVersion(number, folder, None, f"several model cards in {folder}: {names}")


def _model_folder(root: Path, name: str) -> Path:
    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise RepositoryError(f"invalid model name {name!r}: expected {MODEL_NAME_PATTERN.pattern}")
    return root / name


def scan_model(root: Path, name: str) -> RepositoryModel:
    folder = _model_folder(root, name)
    if not folder.is_dir():
        raise RepositoryError(f"no model folder {folder}")
    versions = {n: _version(n, f) for n, f in sorted(_version_folders(folder).items())}
    policy, config_error = _read_config(folder)
    return RepositoryModel(name, folder, versions, policy, config_error)


def scan(root: Path) -> dict[str, RepositoryModel]:
    """Every model in `root`, by name; folders whose names cannot be model names are skipped."""
    if not root.is_dir():
        raise RepositoryError(f"model repository {root} is not a folder")
    return {
        entry.name: scan_model(root, entry.name)
        for entry in sorted(root.iterdir())
        if entry.is_dir() and MODEL_NAME_PATTERN.fullmatch(entry.name)
    }


def next_version(root: Path, name: str) -> int:
    folder = _model_folder(root, name)
    if not folder.is_dir():
        return 1
    return max(_version_folders(folder), default=0) + 1


def publish_version(root: Path, name: str, write: Callable[[Path, int], None]) -> Path:
    """Publish a new version of `name`; return its folder.

    `write(folder, version)` fills a hidden folder for `version`, the number it
    will be published as. Should another publisher take that number first, the
    folder is emptied and `write` is called again with the next free number, so
    whatever `write` records of the version (a card's `version`) stays true.
    """
    folder = _model_folder(root, name)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{secrets.token_hex(8)}"
    tmp.mkdir()
    try:
        number = next_version(root, name)
        while True:
            write(tmp, number)
            # rename() silently replaces an empty folder, so an empty version could be
            # lost to a concurrent publisher; an empty version serves nothing anyway.
            if not any(tmp.iterdir()):
                raise RepositoryError(f"nothing was written for version {number} of {name}")
            target = folder / str(number)
            try:
                os.rename(tmp, target)
                return target
            except OSError as exc:
                if exc.errno not in _TAKEN:
                    raise
            number = max(number + 1, next_version(root, name))
            shutil.rmtree(tmp)
            tmp.mkdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
