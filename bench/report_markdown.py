"""The pieces RESULTS.md is built from: tables from column specs, and the template's blocks."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from string import Template
from typing import Any, TypeVar

TEMPLATE = Path(__file__).resolve().parent / "report_template.md"
_BLOCK = re.compile(r"^<!-- block: (\S+) -->$", re.MULTILINE)

T = TypeVar("T")
Column = tuple[str, Callable[[T], str]]  # header, and the cell for one row's item
Share = Sequence[Any]  # [name, fraction], as a profile's JSON holds it


def table(columns: Sequence[Column[T]], items: Iterable[T]) -> str:
    lines = ["| " + " | ".join(header for header, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(item) for _, cell in columns) + " |" for item in items]
    return "\n".join(lines)


def pairs_table(data: Mapping[str, object]) -> str:
    return table([("", lambda kv: str(kv[0])), ("", lambda kv: str(kv[1]))], data.items())


def num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def name(row: Share) -> str:
    return str(row[0])


def code(row: Share) -> str:
    return f"`{row[0]}`"


def share(row: Share) -> str:
    return f"{row[1]:.1%}"


@cache
def _blocks(path: Path = TEMPLATE) -> dict[str, Template]:
    parts = _BLOCK.split(path.read_text())
    return {key: Template(body.strip()) for key, body in zip(parts[1::2], parts[2::2], strict=True)}


def fill(block: str, **values: object) -> str:
    """One block of the template with its placeholders filled; a missing value is an error."""
    return _blocks()[block].substitute(values)


def tidy(text: str) -> str:
    """Optional parts left empty leave runs of blank lines: one blank line is enough."""
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
