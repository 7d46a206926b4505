"""Security headers on every response (a pure ASGI middleware: no buffering, websockets pass).

- all: ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``;
- served over TLS: ``Strict-Transport-Security`` (browsers keep to HTTPS for a year);
- ``/api/...``, ``/login``, ``/logout``: ``Cache-Control: no-store`` (answers carry tokens);
- ``/docs`` and ``/openapi.json``: no framing (``X-Frame-Options: DENY``, CSP
  ``frame-ancestors 'none'``), nothing but the page's own inline style, ``no-store``.

A header a route already set is kept (console pages set their own).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS = b"max-age=31536000"
DOCS_CSP = b"default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
DOCS_PATHS = ("/docs", "/openapi.json")
NO_STORE_PREFIXES = ("/api/", "/login", "/logout")


def headers_for(path: str, tls: bool) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
    if tls:
        headers.append((b"strict-transport-security", HSTS))
    if path in DOCS_PATHS:
        headers += [(b"x-frame-options", b"DENY"), (b"content-security-policy", DOCS_CSP),
                    (b"cache-control", b"no-store")]
    elif path.startswith(NO_STORE_PREFIXES):
        headers.append((b"cache-control", b"no-store"))
    return headers


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = headers_for(scope.get("path", ""), scope.get("scheme") == "https")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((n, v) for n, v in extra if n not in present)]
            await send(message)

        await self.app(scope, receive, send_with_headers)
