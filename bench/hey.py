"""Load generation with `hey`, and the parsing of its text summary.

hey prints latencies in seconds and a status-code and error distribution; its
own Requests/sec counts failed requests too, so throughput here is computed
from the 2xx responses alone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

_TOTAL = re.compile(r"^\s*Total:\s+([\d.]+) secs", re.MULTILINE)
_SLOWEST = re.compile(r"^\s*Slowest:\s+([\d.]+) secs", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s*(\d+)% in ([\d.]+) secs", re.MULTILINE)
_STATUS = re.compile(r"^\s*\[(\d{3})\]\s+(\d+) responses", re.MULTILINE)
_ERROR = re.compile(r"^\s*\[(\d+)\]\s+(.+)$")


class HeyError(RuntimeError):
    """hey could not be found, installed, or run."""


@dataclass(frozen=True)
class HeyResult:
    seconds: float
    statuses: dict[int, int]
    errors: dict[str, int] = field(default_factory=dict)  # transport errors: message -> count
    percentiles: dict[int, float] = field(default_factory=dict)  # 50 -> seconds
    slowest: float | None = None  # seconds

    @property
    def ok(self) -> int:
        return sum(n for code, n in self.statuses.items() if 200 <= code < 300)

    @property
    def failed(self) -> int:
        """Non-2xx answers plus requests that got no answer at all."""
        answered_badly = sum(n for code, n in self.statuses.items() if not 200 <= code < 300)
        return answered_badly + sum(self.errors.values())

    @property
    def req_s(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def latency_ms(self, percentile: int) -> float | None:
        """hey omits a percentile it has too few samples for; then p99 is the slowest."""
        value = self.percentiles.get(percentile)
        if value is None and percentile == 99 and self.ok + self.failed < 100:
            value = self.slowest
        return None if value is None else value * 1000.0

    def to_dict(self) -> dict[str, object]:
        return {
            "seconds": self.seconds,
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "errors": self.errors,
            "percentiles": {str(k): v for k, v in self.percentiles.items()},
            "slowest": self.slowest,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> HeyResult:
        def table(key: str) -> dict[str, object]:
            value = data.get(key) or {}
            return value if isinstance(value, dict) else {}

        return cls(
            seconds=float(str(data["seconds"])),
            statuses={int(k): int(str(v)) for k, v in table("statuses").items()},
            errors={str(k): int(str(v)) for k, v in table("errors").items()},
            percentiles={int(k): float(str(v)) for k, v in table("percentiles").items()},
            slowest=None if data.get("slowest") is None else float(str(data["slowest"])),
        )


def parse_hey(text: str) -> HeyResult:
    """Parse hey's default summary output."""
    total = _TOTAL.search(text)
    if total is None:
        raise HeyError(f"not a hey summary: {text[:200]!r}")
    statuses = {int(code): int(n) for code, n in _STATUS.findall(text)}
    percentiles = {int(p): float(s) for p, s in _PERCENTILE.findall(text)}
    slowest = _SLOWEST.search(text)
    return HeyResult(
        seconds=float(total.group(1)),
        statuses=statuses,
        errors=_errors(text),
        percentiles=percentiles,
        slowest=float(slowest.group(1)) if slowest else None,
    )


def _errors(text: str) -> dict[str, int]:
    _, found, rest = text.partition("Error distribution:")
    if not found:
        return {}
    errors: dict[str, int] = {}
    for line in rest.splitlines():
        match = _ERROR.match(line)
        if match:
            errors[match.group(2).strip()] = errors.get(match.group(2).strip(), 0) + int(
                match.group(1)
            )
    return errors


def ensure_hey() -> str:
    """The path of hey, installed from Debian's packages when missing."""
    found = shutil.which("hey")
    if found:
        return found
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "-q", "-y"]
    for step in (["update"], ["install", "hey"]):
        done = subprocess.run([*apt, *step], capture_output=True, text=True, check=False)
        if done.returncode != 0 and step[0] == "install":
            raise HeyError(f"cannot install hey with apt-get: {done.stderr.strip()[-400:]}")
    found = shutil.which("hey")
    if not found:
        raise HeyError("hey is still missing after apt-get install hey")
    return found


@dataclass(frozen=True)
class Load:
    """One hey run: where to send what, how hard, for how long."""

    url: str
    body: Path
    content_type: str
    concurrency: int
    seconds: float
    timeout_s: int = 60
    headers: tuple[str, ...] = ()  # "Name: value"


def hey_command(hey: str, load: Load) -> list[str]:
    return [
        hey,
        "-z",
        f"{load.seconds:g}s",
        "-c",
        str(load.concurrency),
        "-t",
        str(load.timeout_s),
        "-m",
        "POST",
        "-T",
        load.content_type,
        "-D",
        str(load.body),
        *(part for header in load.headers for part in ("-H", header)),
        load.url,
    ]


def run_hey(hey: str, load: Load) -> HeyResult:
    done = subprocess.run(
        hey_command(hey, load),
        capture_output=True,
        text=True,
        check=False,
        timeout=load.seconds + load.timeout_s + 30,
    )
    if done.returncode != 0:
        raise HeyError(f"hey exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return parse_hey(done.stdout)
