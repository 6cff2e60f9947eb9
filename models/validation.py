"""One summary of pydantic validation errors, for model cards, settings and request parameters."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any


def dotted(loc: Sequence[int | str]) -> str:
    """("query", "top_k") -> "query.top_k"; an error about the whole object -> "<root>"."""
    return ".".join(str(part) for part in loc) or "<root>"


def summarize_errors(
    errors: Iterable[Any], label: Callable[[Sequence[int | str]], str] = dotted
) -> str:
    """'where: what; where: what' for pydantic's (or FastAPI's) error dicts."""
    return "; ".join(f"{label(tuple(error.get('loc', ())))}: {_message(error)}" for error in errors)


def _message(error: Any) -> str:
    # pydantic prefixes a validator's ValueError with "Value error, ": the reader wants the reason.
    text = str(error.get("msg", "invalid"))
    return text.removeprefix("Value error, ")
