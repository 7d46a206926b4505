"""The web panel: ``/`` answers its page, ``/panel/<file>`` its built assets.

The panel is a static single-page application (``web/panel``, built by
``scripts/build-panel.sh`` into ``idcs_core/static/panel``) that talks only to the public
REST API with a bearer token kept in ``sessionStorage``. Its pages carry a strict
Content-Security-Policy: scripts and styles from this origin only, no inline scripts,
no framing by other sites.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

PANEL_DIR = Path(__file__).resolve().parent.parent / "static" / "panel"

# The panel embeds the same-origin terminal / console pages in an iframe; everything else is 'self'.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'self'; object-src 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}
# Built asset names carry a content hash: they never change under the same name.
ASSET_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=31536000, immutable"}
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon",
               ".txt": "text/plain; charset=utf-8"}
NOT_BUILT = ("The web panel is not built: run scripts/build-panel.sh (needs node and npm), "
             "then reload this page. The API works without it (/docs).")


async def panel_page(_request: Request) -> Response:
    """The panel's single page (every view lives behind the address's #fragment)."""
    index = PANEL_DIR / "index.html"
    if not index.is_file():
        return PlainTextResponse(NOT_BUILT, status_code=503, headers=PAGE_HEADERS)
    return FileResponse(index, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


async def panel_asset(request: Request) -> Response:
    """A built asset by its plain name; the gzip copy made at build time when the browser takes it."""
    name = str(request.path_params["name"])
    path = PANEL_DIR / name
    media_type = MEDIA_TYPES.get(path.suffix)
    if "/" in name or name.startswith(".") or media_type is None or not path.is_file():
        return PlainTextResponse("not found", status_code=404, headers={"X-Content-Type-Options": "nosniff"})
    headers = dict(ASSET_HEADERS, Vary="Accept-Encoding")
    gz = path.with_name(path.name + ".gz")
    if "gzip" in request.headers.get("accept-encoding", "") and gz.is_file():
        return FileResponse(gz, media_type=media_type, headers=headers | {"Content-Encoding": "gzip"})
    return FileResponse(path, media_type=media_type, headers=headers)


routes = [Route("/", panel_page, methods=["GET"]), Route("/panel/{name}", panel_asset, methods=["GET"])]
