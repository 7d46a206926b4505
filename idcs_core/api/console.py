"""The console pages the core serves, and their websockets.

- ``/console/terminal``: xterm.js, bridged to the engine's ``vm_terminal_open``;
- ``/console/vnc``: noVNC, bridged over TCP to the engine's ``vm_console`` endpoint.

``/api/client/remote`` hands out ``/console/<page>#<ticket>``: the page is static (the
fragment never reaches the server, so no access log holds the ticket); its script puts the
ticket in the websocket's ``Sec-WebSocket-Protocol`` (``idcs.ticket.<ticket>``), where it
is redeemed once (``services.console_tickets``). The browser libraries come from npm
(``web/package.json``) through ``scripts/build-web.sh`` into ``static/vendor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import time
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from idcs_core import errors
from idcs_core.api.envelope import EnvelopeResponse
from idcs_core.engines import VMTarget
from idcs_core.services.console_tickets import TICKET_PROTOCOL, ConsoleGrant, PageKind
from idcs_core.services.rfb import MessageReader, connect_vnc, greet_browser
from idcs_core.services.terminal_bridge import TerminalBridge
from idcs_core.types import ConsoleEndpoint, ConsoleKind, TerminalChannel

log = logging.getLogger("idcs.console")
STATIC = Path(__file__).resolve().parent.parent / "static"
PAGES = STATIC / "console"
VENDOR = STATIC / "vendor"
MIN_COLS, MAX_COLS = 2, 500
MIN_ROWS, MAX_ROWS = 2, 200
HANDSHAKE_SECONDS = 15
RECHECK_SECONDS = 10.0  # an open console re-checks its ticket's binding (logout, VM delete...) this often

# The pages load only their own scripts and styles and talk only to this origin; only this origin's own
# pages (the web panel embeds the terminal and the console) may frame them.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                "img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; "
                                "worker-src 'self' blob:; base-uri 'none'; form-action 'none'; "
                                "frame-ancestors 'self'"),
}
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/javascript", ".js")


class ConsoleClose(Exception):
    """End a console websocket with ``code`` and a short ``reason`` the page shows."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason[:120]


def _page(name: str) -> Response:
    if not (VENDOR / "novnc" / "core" / "rfb.js").is_file() or not (VENDOR / "xterm" / "xterm.mjs").is_file():
        return EnvelopeResponse(None, code=500, msg="the console pages are not built: run scripts/build-web.sh",
                                status=503)
    return Response((PAGES / name).read_bytes(), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


async def terminal_page(request: Request) -> Response:
    return _page("terminal.html")


async def vnc_page(request: Request) -> Response:
    return _page("vnc.html")


def _ticket(ws: WebSocket) -> str:
    for protocol in ws.scope.get("subprotocols") or []:
        if protocol.startswith(TICKET_PROTOCOL):
            return protocol[len(TICKET_PROTOCOL):]
    return ""


async def _accept(ws: WebSocket) -> None:
    offered = ws.scope.get("subprotocols") or []
    await ws.accept(subprotocol="binary" if "binary" in offered else None)


async def _close(ws: WebSocket, code: int = 1000, reason: str = "") -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
        await ws.close(code=code, reason=reason)


async def _redeem(ws: WebSocket, kind: PageKind) -> tuple[ConsoleGrant, VMTarget]:
    core = ws.app.state.core
    try:
        return await core.console_tickets.open(_ticket(ws), kind, ws.client.host if ws.client else "")
    except errors.IDCSError as exc:
        raise ConsoleClose(4403, exc.msg) from exc


# ---------------------------------------------------------------------- terminal


def terminal_size(cols: Any, rows: Any) -> tuple[int, int]:
    """``cols`` x ``rows`` as integers within bounds, else ``BadRequest``."""
    try:
        c, r = int(str(cols), 10), int(str(rows), 10)
    except ValueError:
        raise errors.BadRequest("cols and rows must be whole numbers") from None
    if not (MIN_COLS <= c <= MAX_COLS and MIN_ROWS <= r <= MAX_ROWS):
        raise errors.BadRequest(f"cols must be {MIN_COLS}..{MAX_COLS} and rows {MIN_ROWS}..{MAX_ROWS}")
    return c, r


async def terminal_socket(ws: WebSocket) -> None:
    core = ws.app.state.core
    await _accept(ws)
    try:
        cols, rows = terminal_size(ws.query_params.get("cols", "80"), ws.query_params.get("rows", "24"))
    except errors.IDCSError as exc:
        await _close(ws, 4400, exc.msg)
        return
    try:
        grant, target = await _redeem(ws, "terminal")
        channel: TerminalChannel = await core.engines.vm_terminal_open(target, cols, rows)
    except ConsoleClose as exc:
        await _close(ws, exc.code, exc.reason)
        return
    except errors.IDCSError as exc:
        await _close(ws, 4500, exc.msg[:120])
        return
    await _run_terminal(ws, grant, TerminalBridge(channel, grant.vm_uuid))


async def _watch(ws: WebSocket, grant: ConsoleGrant) -> None:
    """Close the console once what its ticket was bound to no longer holds."""
    while True:
        await asyncio.sleep(RECHECK_SECONDS)
        try:
            await ws.app.state.core.console_tickets.check_binding(grant)
        except errors.IDCSError as exc:
            await _close(ws, 4403, exc.msg)
            return


async def _run_terminal(ws: WebSocket, grant: ConsoleGrant, bridge: TerminalBridge) -> None:
    bridge.start()

    async def pump_out() -> None:
        while True:
            data = await bridge.read()
            if not data:
                break
            await ws.send_bytes(data)

    out = asyncio.create_task(pump_out())
    watch = asyncio.create_task(_watch(ws, grant))
    try:
        while not (out.done() or watch.done()):
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("bytes") is not None:
                await bridge.write(message["bytes"])
            elif message.get("text") is not None:
                problem = await _control(bridge, message["text"])
                if problem:
                    await ws.send_text(orjson.dumps({"type": "error", "msg": problem}).decode())
    except WebSocketDisconnect:
        pass
    finally:
        out.cancel()
        watch.cancel()
        try:
            await bridge.close()
        except Exception:  # the engine side may already be gone
            log.debug("closing terminal %s failed", bridge.name, exc_info=True)
        await _close(ws)


async def _control(bridge: TerminalBridge, text: str) -> str | None:
    """Text frames: ``{"type": "input", "data": "..."}`` or ``{"type": "resize", "cols", "rows"}``;
    any other text is typed as it is. Returns what was wrong with a malformed frame, else None."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        await bridge.write(text.encode())
        return None
    if not isinstance(msg, dict):
        return "a control frame is a JSON object with a type (input or resize)"
    if msg.get("type") == "resize":
        try:
            cols, rows = terminal_size(msg.get("cols"), msg.get("rows"))
        except errors.IDCSError as exc:
            return exc.msg
        await bridge.resize(cols, rows)
    elif msg.get("type") == "input" and isinstance(msg.get("data"), str):
        await bridge.write(msg["data"].encode())
    else:
        return "unknown control frame: use {type: input, data} or {type: resize, cols, rows}"
    return None


# ---------------------------------------------------------------------- VNC


async def vnc_socket(ws: WebSocket) -> None:
    core = ws.app.state.core
    await _accept(ws)
    try:
        grant, target = await _redeem(ws, "vnc")
        endpoint = await core.engines.vm_console(target)
        if not isinstance(endpoint, ConsoleEndpoint):
            raise errors.VMOperationFailed(f"vm_console returned {type(endpoint).__name__}, not a ConsoleEndpoint")
        if endpoint.kind != ConsoleKind.VNC:
            raise errors.NotSupported(f"the core does not bridge {endpoint.kind} consoles yet")
        if endpoint.expires_at is not None and endpoint.expires_at <= time.time():
            raise errors.VMOperationFailed("the engine gave a console endpoint that has already expired")
        reader, writer = await connect_vnc(endpoint, HANDSHAKE_SECONDS)
    except ConsoleClose as exc:
        await _close(ws, exc.code, exc.reason)
        return
    except errors.IDCSError as exc:
        await _close(ws, 4500, exc.msg[:120])
        return
    try:
        browser = MessageReader(ws.receive_bytes)
        await asyncio.wait_for(greet_browser(ws.send_bytes, browser), HANDSHAKE_SECONDS)
        if browser.buffer:
            writer.write(browser.buffer)
        await _pipe(ws, grant, reader, writer)
    except (errors.IDCSError, TimeoutError, WebSocketDisconnect, KeyError, OSError) as exc:
        log.debug("console of %s/%s ended: %s", grant.host_name, grant.vm_uuid, exc)
    finally:
        writer.close()
        await _close(ws)


async def _pipe(ws: WebSocket, grant: ConsoleGrant, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter) -> None:
    """RFB bytes both ways until either side leaves or the ticket's binding breaks."""

    async def to_browser() -> None:
        while data := await reader.read(65536):
            await ws.send_bytes(data)

    async def to_server() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data:
                writer.write(data)
                await writer.drain()

    tasks = [asyncio.create_task(to_browser()), asyncio.create_task(to_server()),
             asyncio.create_task(_watch(ws, grant))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


routes = [Route("/console/terminal", terminal_page, methods=["GET"]),
          Route("/console/vnc", vnc_page, methods=["GET"]),
          WebSocketRoute("/console/terminal/ws", terminal_socket),
          WebSocketRoute("/console/vnc/ws", vnc_socket),
          Mount("/console/static", StaticFiles(directory=STATIC, check_dir=False), name="console-static")]
