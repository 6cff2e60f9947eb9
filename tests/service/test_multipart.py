"""The in-place multipart splitter agrees with python-multipart, or steps aside."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from service.multipart import boundary_of, split_files
from service.spool import SpoolBudget, read_form

MAX_PARTS = 64


def starlette_files(body: bytes, content_type: str) -> list[bytes] | Exception:
    """What the streaming parser (python-multipart through Starlette) makes of the body."""

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    headers = Headers({"content-type": content_type, "content-length": str(len(body))})
    try:
        return asyncio.run(
            read_form(
                headers, stream(), SpoolBudget(1 << 30), max_files=MAX_PARTS, max_fields=MAX_PARTS
            )
        )
    except Exception as exc:  # the error the service turns into 400 invalid_body
        return exc


def httpx_body(
    files: list[tuple[str, bytes]], data: dict[str, str], boundary: bytes
) -> tuple[bytes, str]:
    request = httpx.Request(
        "POST",
        "http://x/",
        files=[("images", (name, content, "image/png")) for name, content in files],
        data=data,
        headers={"content-type": f"multipart/form-data; boundary={boundary.decode()}"},
    )
    return request.read(), request.headers["content-type"]


contents = st.binary(max_size=300)
names = st.text(alphabet="abcdefghij.-_ 0123456789", min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    files=st.lists(st.tuples(names, contents), min_size=1, max_size=8),
    data=st.dictionaries(st.sampled_from(["top_k", "note", "x"]), names, max_size=2),
)
def test_what_clients_send_splits_exactly_as_python_multipart_parses(
    files: list[tuple[str, bytes]], data: dict[str, str]
) -> None:
    body, content_type = httpx_body(files, data, b"b0undary-7f3a")
    boundary = boundary_of(content_type)
    assert boundary == b"b0undary-7f3a"
    split = split_files(body, boundary, max_parts=MAX_PARTS)
    assert split == [content for _, content in files]
    assert split == starlette_files(body, content_type)


@settings(max_examples=300, deadline=None)
@given(
    files=st.lists(st.tuples(names, contents), min_size=1, max_size=4),
    cut=st.integers(min_value=0, max_value=2000),
    insert=st.binary(min_size=1, max_size=6),
)
def test_a_damaged_body_is_split_as_python_multipart_would_or_left_to_it(
    files: list[tuple[str, bytes]], cut: int, insert: bytes
) -> None:
    body, content_type = httpx_body(files, {}, b"bnd")
    position = cut % (len(body) + 1)
    for damaged in (body[:position], body[:position] + insert + body[position:]):
        split = split_files(damaged, b"bnd", max_parts=MAX_PARTS)
        if split is not None:  # when it answers, it answers as python-multipart does
            assert split == starlette_files(damaged, content_type)


@pytest.mark.parametrize(
    "body",
    [
        b'preamble\r\n--b\r\nContent-Disposition: form-data; name="a"; filename="x"\r\n\r\n1\r\n--b--',
        b"--b\r\nContent-Disposition: form-data; name=\"a\"; filename*=UTF-8''x\r\n\r\n1\r\n--b--",
        b'--b\r\nContent-Disposition: form-data; name="a"; filename="x\\"y"\r\n\r\n1\r\n--b--',
        b'--b\r\nContent-Disposition: form-data; name="a"; filename="x"\r\n\r\n1\r\n--b',
        b'--b\r\nContent-Disposition: attachment; name="a"; filename="x"\r\n\r\n1\r\n--b--',
        b"--b\r\n\r\n1\r\n--b--",
    ],
    ids=["preamble", "extended filename", "escaped quote", "unclosed", "attachment", "no headers"],
)
def test_the_unusual_is_left_to_python_multipart(body: bytes) -> None:
    assert split_files(body, b"b", max_parts=MAX_PARTS) is None


def test_more_parts_than_allowed_are_left_to_python_multipart_and_its_limit() -> None:
    body, _ = httpx_body([(f"{i}.png", b"x") for i in range(5)], {}, b"bnd")
    assert split_files(body, b"bnd", max_parts=4) is None
    assert split_files(body, b"bnd", max_parts=5) == [b"x"] * 5


def test_boundary_parameter_forms() -> None:
    assert boundary_of('multipart/form-data; boundary="a b:c"') == b"a b:c"
    assert boundary_of("multipart/form-data; charset=utf-8; BOUNDARY=xyz") == b"xyz"
    assert boundary_of("multipart/form-data") is None
