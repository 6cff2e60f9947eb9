"""Security at the edge: the optional API key, response security headers, and CORS.

All three are pure ASGI middleware keyed on the request path, so a router added
later is covered without knowing about them: every path under a protected prefix
needs the key, every response gets the headers.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import Forbidden, Unauthorized
from service.problems import service_error_response
from service.settings import Settings

# The inference and model APIs; health, readiness, metrics, the docs and the page stay open.
PROTECTED_PREFIXES = ("/v1", "/v2")
# Model management: the admin key only, never the inference key (see AdminKeyAuth).
ADMIN_PREFIXES = ("/v2/repository",)

# Headers sent on every response: no MIME sniffing, no framing, no referrer leaks.
COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}

# HTML pages ship their scripts and styles as files (nothing inline) and show images
# fetched with the key as blob: URLs; nothing else is allowed to run or load.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)

# FastAPI's interactive docs load Swagger UI / ReDoc from a CDN with an inline script:
# they keep the common headers but cannot live under the page policy.
DOCS_PATHS = ("/docs", "/redoc")


def _is_protected(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


def _needs_key(scope: Scope, prefixes: Iterable[str], exempt: Iterable[str] = ()) -> bool:
    """An HTTP request under the prefixes (CORS preflights carry no credentials by design)."""
    return (
        scope["type"] == "http"
        and scope["method"] != "OPTIONS"
        and _is_protected(scope["path"], prefixes)
        and not _is_protected(scope["path"], exempt)
    )


def _bearer_token(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = bytes(value).partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
            return None
    return None


class ApiKeyAuth:
    """Require `Authorization: Bearer <key>` on every path under the protected prefixes.

    The key is compared with hmac.compare_digest, whose time does not depend on
    where the first differing byte is. The body is never read before the check.
    CORS preflights (OPTIONS) carry no credentials by design and pass through.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        key: str,
        prefixes: Iterable[str] = PROTECTED_PREFIXES,
        exempt: Iterable[str] = ADMIN_PREFIXES,
    ) -> None:
        self.app = app
        self._key = key.encode("utf-8")
        self._prefixes = tuple(prefixes)
        self._exempt = tuple(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _needs_key(scope, self._prefixes, self._exempt):
            await self.app(scope, receive, send)
            return
        token = _bearer_token(scope)
        if token is not None and hmac.compare_digest(token, self._key):
            await self.app(scope, receive, send)
            return
        await _refuse(token, "API key", scope, receive, send)


async def _refuse(
    token: bytes | None, what: str, scope: Scope, receive: Receive, send: Send
) -> None:
    challenge = 'Bearer realm="cnn-serve"'
    if token is None:
        error = Unauthorized(f"send the {what} as 'Authorization: Bearer <key>'")
    else:
        error = Unauthorized(f"the {what} is not valid")
        challenge += ', error="invalid_token"'
    error.headers["WWW-Authenticate"] = challenge
    await service_error_response(error, scope)(scope, receive, send)


class AdminKeyAuth:
    """Model management takes the admin key alone; without one set, it is off.

    The inference key gets 403: it is valid, and not for this. An admin key that
    equals the inference key is refused at start-up (service.settings).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        admin_key: str | None,
        api_key: str | None,
        prefixes: Iterable[str] = ADMIN_PREFIXES,
    ) -> None:
        self.app = app
        self._admin = None if admin_key is None else admin_key.encode("utf-8")
        self._api = None if api_key is None else api_key.encode("utf-8")
        self._prefixes = tuple(prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _needs_key(scope, self._prefixes):
            await self.app(scope, receive, send)
            return
        if self._admin is None:
            off = Forbidden("model management is off: set CNN_ADMIN_API_KEY to turn it on")
            await service_error_response(off, scope)(scope, receive, send)
            return
        token = _bearer_token(scope)
        if token is not None and hmac.compare_digest(token, self._admin):
            await self.app(scope, receive, send)
            return
        if token is not None and self._api is not None and hmac.compare_digest(token, self._api):
            refused = Forbidden("the inference key cannot manage models; use the admin key")
            await service_error_response(refused, scope)(scope, receive, send)
            return
        await _refuse(token, "admin key", scope, receive, send)


class SecurityHeaders:
    """Add the common security headers to every response, and a CSP to HTML pages."""

    def __init__(self, app: ASGIApp, *, exempt_from_csp: Iterable[str] = DOCS_PATHS) -> None:
        self.app = app
        self._exempt = tuple(exempt_from_csp)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        page_policy = not _is_protected(scope["path"], self._exempt)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": _with_common(message, page_policy)}
            await send(message)

        await self.app(scope, receive, send_with_headers)


_COMMON_RAW = tuple(
    (name.lower().encode("latin-1"), value.encode("latin-1"))
    for name, value in COMMON_HEADERS.items()
)
_CSP_RAW = (b"content-security-policy", PAGE_CSP.encode("latin-1"))


def _with_common(message: Message, page_policy: bool) -> list[tuple[bytes, bytes]]:
    """The answer's headers plus the common ones it does not set itself (and the page
    policy for HTML), on raw header pairs: this runs on every response."""
    headers = list(message.get("headers", ()))
    present = {name.lower(): value for name, value in headers}
    headers.extend(pair for pair in _COMMON_RAW if pair[0] not in present)
    is_html = present.get(b"content-type", b"").startswith(b"text/html")
    if is_html and page_policy and _CSP_RAW[0] not in present:
        headers.append(_CSP_RAW)
    return headers


def install_security(app: FastAPI, settings: Settings) -> None:
    """Add the middleware; call after every other middleware so these run first."""
    api_key = None if settings.api_key is None else settings.api_key.get_secret_value()
    admin_key = (
        None if settings.admin_api_key is None else settings.admin_api_key.get_secret_value()
    )
    app.add_middleware(AdminKeyAuth, admin_key=admin_key, api_key=api_key)
    if api_key is not None:
        app.add_middleware(ApiKeyAuth, key=api_key)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["Retry-After", "X-Request-ID"],
            max_age=600,
        )
    app.add_middleware(SecurityHeaders)
