"""Models from a repository folder, changed while the service runs (CNN_MODEL_REPOSITORY).

The folder's layout and version policies are models.repository's. CNN_MODEL_CONTROL says
who changes what is served:
- none: what the repository holds at start-up, for good;
- explicit: the same at start-up, then `load` (read the model's folder again and serve
  what its policy names now) and `unload` through the admin API;
- poll: the whole repository read again every CNN_REPOSITORY_POLL_S.

Syncing a model loads each wanted version that is not served yet, in a thread, warmed
at every batch size while the served versions keep answering. A version joins the
registry only when ready, so the move of unversioned requests to the newest version is
one assignment. The versions no longer wanted leave only once every wanted version is
served: a new version that fails to load leaves the old one serving. A failed version is
reported on the index with its error and tried again only when its folder changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from models.repository import RepositoryError, RepositoryModel, scan, scan_model
from service.errors import ModelControlUnavailable, ModelLoadFailed, UnknownModel

log = logging.getLogger("service.repository")

Control = Literal["none", "explicit", "poll"]


class VersionState(enum.StrEnum):
    """As Triton's repository index names them."""

    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class VersionStatus:
    state: VersionState
    reason: str = ""
    # The folder's files (name, size, mtime) when it failed: tried again once they change.
    signature: tuple[tuple[str, int, int], ...] = ()
    failed: bool = False  # UNAVAILABLE because it could not load, not because it was retired


class RepositoryControl(Protocol):
    """The admin API's view: the manager here, or the engine process's through its socket."""

    async def index(self, *, ready_only: bool = False) -> list[dict[str, str]]: ...

    async def load(self, name: str) -> None: ...

    async def unload(self, name: str) -> None: ...


class ModelHost(Protocol):
    """Where versions are loaded and retired: service.loading.LocalModels."""

    def served_versions(self, name: str) -> set[str]: ...

    async def add_version(self, name: str, card: Path, version: str) -> None: ...

    def retire_version(self, name: str, version: str) -> asyncio.Future[None]:
        """Out of the registry now; done once the version has stopped and is freed."""
        ...


class LoadRecorder(Protocol):
    """Counts loads and unloads: service.metrics.Metrics."""

    def model_load(self, name: str, *, ok: bool, seconds: float) -> None: ...

    def model_unload(self, name: str) -> None: ...


def _signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    with contextlib.suppress(OSError):
        return tuple(
            sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir())
        )
    return ()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class RepositoryManager:
    """What the repository serves, kept in step with it; one change at a time."""

    def __init__(
        self, root: Path, control: Control, host: ModelHost, recorder: LoadRecorder
    ) -> None:
        self.root = root
        self.control = control
        self._host = host
        self._recorder = recorder
        self._status: dict[tuple[str, str], VersionStatus] = {}
        self._model_errors: dict[str, str] = {}  # a model's config.json that cannot be read
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None

    # ---- what the admin API calls ------------------------------------------

    async def index(self, *, ready_only: bool = False) -> list[dict[str, str]]:
        """Every model version known, as the repository extension's index lists them."""
        entries = []
        for (name, version), status in sorted(self._status.items(), key=_index_order):
            if ready_only and status.state is not VersionState.READY:
                continue
            entry = {"name": name, "version": version, "state": status.state.value}
            entry["reason"] = status.reason
            entries.append(entry)
        for name, error in sorted(self._model_errors.items()):
            if not ready_only:
                entries.append(
                    {"name": name, "version": "", "state": "UNAVAILABLE", "reason": error}
                )
        return entries

    def states(self) -> dict[tuple[str, str], VersionState]:
        """Each version loading, serving, unloading, or failed (retired ones are left out)."""
        return {
            key: status.state
            for key, status in self._status.items()
            if status.state is not VersionState.UNAVAILABLE or status.failed
        }

    async def load(self, name: str) -> None:
        """Read the model's folder again and serve what its policy names (explicit mode)."""
        self._check_explicit("load")
        async with self._lock:
            try:
                model = scan_model(self.root, name)
            except RepositoryError as exc:
                raise UnknownModel(f"no model {name!r} in the repository: {exc}") from None
            failures = await self._sync(model)
        if failures:
            raise ModelLoadFailed("; ".join(failures))

    async def unload(self, name: str) -> None:
        """Stop serving every version of the model (explicit mode)."""
        self._check_explicit("unload")
        async with self._lock:
            served = self._host.served_versions(name)
            if not served and not any(key[0] == name for key in self._status):
                raise UnknownModel(f"no model {name!r} is loaded")
            for version in sorted(served):
                self._retire(name, version, "unloaded")

    def _check_explicit(self, what: str) -> None:
        if self.control != "explicit":
            raise ModelControlUnavailable(
                f"cannot {what} with CNN_MODEL_CONTROL={self.control}: "
                + (
                    "the repository decides what is served; change it there"
                    if self.control == "poll"
                    else "models are fixed at start-up; set CNN_MODEL_CONTROL=explicit"
                )
            )

    # ---- start-up, polling, shutdown ---------------------------------------

    async def open(self, poll_s: float) -> None:
        """Serve what the repository holds now; with polling, keep following it."""
        await self.sync_all()
        if self.control == "poll":
            self._poller = asyncio.create_task(self._poll(poll_s))

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    async def _poll(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sync_all()
            except Exception:  # a vanished folder, a full disk: the next scan tries again
                log.exception("repository scan failed", extra={"repository": str(self.root)})

    async def sync_all(self) -> None:
        async with self._lock:
            found = await asyncio.to_thread(scan, self.root)
            for model in found.values():
                await self._sync(model)
            for name in {key[0] for key in self._status} - set(found):
                self._model_errors.pop(name, None)
                self._forget_gone(name, set())
                for version in sorted(self._host.served_versions(name)):
                    self._retire(name, version, "removed from the repository")

    # ---- one model -----------------------------------------------------------

    async def _sync(self, model: RepositoryModel) -> list[str]:
        """Load the wanted versions, then retire the rest; the load errors."""
        name = model.name
        if model.config_error is not None:
            self._model_errors[name] = model.config_error
            log.error(
                "model config cannot be read", extra={"model": name, "error": model.config_error}
            )
            return [model.config_error]
        self._model_errors.pop(name, None)
        self._forget_gone(name, {str(v) for v in model.versions})
        for number, entry in model.versions.items():
            if entry.error is not None:
                self._status[(name, str(number))] = VersionStatus(
                    VersionState.UNAVAILABLE, entry.error, _signature(entry.folder), failed=True
                )
        wanted = [str(v) for v in model.wanted()]
        served = self._host.served_versions(name)
        failures = []
        for version in wanted:
            if version in served:
                continue
            entry = model.versions[int(version)]
            assert entry.card is not None  # wanted() holds versions without errors only
            error = await self._load(name, version, entry.card, _signature(entry.folder))
            if error is not None:
                failures.append(f"{name} version {version}: {error}")
        served = self._host.served_versions(name)
        if all(version in served for version in wanted):
            for version in sorted(served - set(wanted)):
                present = version.isdecimal() and int(version) in model.versions
                reason = "not in the version policy" if present else "removed from the repository"
                self._retire(name, version, reason)
        return failures

    def _forget_gone(self, name: str, present: set[str]) -> None:
        """Failed versions whose folder is gone leave the index; served ones are retired."""
        for key, status in list(self._status.items()):
            gone = key[0] == name and key[1] not in present
            if gone and status.state is VersionState.UNAVAILABLE:
                del self._status[key]

    async def _load(self, name: str, version: str, card: Path, signature: Any) -> str | None:
        key = (name, version)
        known = self._status.get(key)
        failed_before = known is not None and known.state is VersionState.UNAVAILABLE
        if failed_before and known is not None and known.signature == signature:
            return known.reason  # failed before, unchanged since: not tried again
        self._status[key] = VersionStatus(VersionState.LOADING)
        started = time.monotonic()
        try:
            await self._host.add_version(name, card, version)
        except Exception as exc:
            reason = _first_line(exc)
            self._status[key] = VersionStatus(
                VersionState.UNAVAILABLE, reason, signature, failed=True
            )
            self._recorder.model_load(name, ok=False, seconds=time.monotonic() - started)
            log.error(
                "model version failed to load",
                extra={"model": name, "version": version, "error": reason},
            )
            return reason
        seconds = time.monotonic() - started
        self._status[key] = VersionStatus(VersionState.READY)
        self._recorder.model_load(name, ok=True, seconds=seconds)
        log.info("model version serving", extra={"model": name, "version": version,
                                                  "seconds": round(seconds, 3)})  # fmt: skip
        return None

    def _retire(self, name: str, version: str, reason: str) -> None:
        key = (name, version)
        stopped = self._host.retire_version(name, version)
        self._status[key] = VersionStatus(VersionState.UNLOADING, reason)
        self._recorder.model_unload(name)
        log.info("model version retired", extra={"model": name, "version": version,
                                                  "reason": reason})  # fmt: skip

        def freed(_: asyncio.Future[None]) -> None:
            if self._status.get(key) == VersionStatus(VersionState.UNLOADING, reason):
                self._status[key] = VersionStatus(VersionState.UNAVAILABLE, reason)

        stopped.add_done_callback(freed)


def _index_order(item: tuple[tuple[str, str], VersionStatus]) -> tuple[str, int, str]:
    (name, version), _ = item
    return (name, int(version) if version.isdecimal() else 0, version)
