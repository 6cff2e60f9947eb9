"""Multipart uploads: parsed with one budget for the file bytes every upload in progress holds.

Starlette spools each file part to memory and, past 1 MB, to a temporary file (in
CNN_TEMP_DIR): an upload holds up to its body size there until its request ends,
and many slow uploads together could fill the disk. The budget counts those bytes
across requests; an upload that would pass it is answered 503 `overloaded`, and
its parts are closed (their files deleted) on every path out, errors included.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import MultiPartParser

from service.errors import Overloaded


class SpoolBudget:
    """File bytes held by uploads in progress, at most `limit`. Used on the event loop only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> None:
        if self.held + size > self.limit:
            raise Overloaded(
                f"uploads in progress hold {self.held} bytes of files; the limit is "
                f"{self.limit} (CNN_MAX_SPOOL_BYTES)",
                headers={"Retry-After": "1"},
            )
        self.held += size

    def give(self, size: int) -> None:
        self.held -= size


class _BudgetedParser(MultiPartParser):
    def __init__(
        self,
        headers: Headers,
        stream: AsyncGenerator[bytes, None],
        *,
        budget: SpoolBudget,
        max_files: int,
        max_fields: int,
    ) -> None:
        super().__init__(headers, stream, max_files=max_files, max_fields=max_fields)
        self.budget = budget
        self.taken = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is not None:
            self.budget.take(end - start)
            self.taken += end - start
        super().on_part_data(data, start, end)


async def read_form(
    headers: Headers,
    stream: AsyncGenerator[bytes, None],
    budget: SpoolBudget,
    *,
    max_files: int,
    max_fields: int,
) -> list[bytes]:
    """The file parts' bytes, in order; every spooled part closed before this returns."""
    parser = _BudgetedParser(
        headers, stream, budget=budget, max_files=max_files, max_fields=max_fields
    )
    form: FormData | None = None
    try:
        form = await parser.parse()
        return [
            await value.read() for _, value in form.multi_items() if isinstance(value, UploadFile)
        ]
    finally:
        budget.give(parser.taken)
        if form is not None:
            await form.close()
