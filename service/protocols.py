"""uvicorn's HTTP protocol, answering a request that is not HTTP/1.1 with problem+json.

When uvicorn's parser gives up on a request (a lowercase method, a bad chunk size, a header
name with a space, a request target of 64 KiB or more, which httptools's URL parser cannot
hold, TLS or HTTP/2 sent to the plain HTTP/1.1 port) it writes its own text/plain 400 and
closes the connection; the app never sees the request. Only that answer's body and headers
change here: still 400, still closed, now problem+json with a stable code. Such a request is
not counted in the metrics nor logged per request: uvicorn logs a warning, as before.

httptools is the parser uvicorn's "auto" picks, and it comes with uvicorn[standard], a
dependency of this package.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.problems import PROBLEM_MEDIA_TYPE, problem
from service.security import COMMON_HEADERS

CODE = "malformed_request"
TITLE = "The request is not valid HTTP/1.1"
DETAIL = (
    "the server could not parse the request (method, request line, headers or chunked body); "
    "nothing was run"
)


def malformed_request_answer() -> bytes:
    """The head and body that replace uvicorn's text/plain 400 (after its date and server)."""
    body = bytes(problem(400, CODE, TITLE, DETAIL).body)
    headers = {
        "content-type": PROBLEM_MEDIA_TYPE,
        "content-length": str(len(body)),
        **{name.lower(): value for name, value in COMMON_HEADERS.items()},
        "connection": "close",
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head.encode("ascii") + b"\r\n" + body


class ProblemHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        content = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.append(_ANSWER)
        self.transport.write(b"".join(content))
        self.transport.close()


_ANSWER = malformed_request_answer()
