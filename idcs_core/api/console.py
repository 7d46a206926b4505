"""The web terminal: a page and a websocket bridged to the engine's ``vm_terminal_open``.

``/api/client/remote`` hands out ``/console/terminal?token=...``; the token is a
short-lived JWT naming one host and VM, so the link works in a browser
without the API token and for that VM only.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from pathlib import Path
from typing import Any

import jwt
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from idcs_core import errors
from idcs_core.api.envelope import error_response
from idcs_core.db.models import VM
from idcs_core.services.lookup import get_host
from idcs_core.types import TerminalChannel

log = logging.getLogger("idcs.console")
TERMINAL_TTL = 300
PAGE = Path(__file__).resolve().parent.parent / "static" / "terminal.html"


def terminal_token(core: Any, hs_name: str, vm_uuid: str) -> str:
    now = int(time.time())
    return jwt.encode({"typ": "terminal", "hs": hs_name, "vm": vm_uuid, "iat": now, "exp": now + TERMINAL_TTL,
                       "iss": "idcs"}, core.keys.jwt_secret, algorithm="HS256")


def read_terminal_token(core: Any, token: str) -> tuple[str, str]:
    try:
        claims = jwt.decode(token, core.keys.jwt_secret, algorithms=["HS256"], issuer="idcs")
    except jwt.ExpiredSignatureError as exc:
        raise errors.TokenExpired("the terminal link has expired: open it again from the panel") from exc
    except jwt.PyJWTError as exc:
        raise errors.TokenInvalid("the terminal link is not valid") from exc
    if claims.get("typ") != "terminal":
        raise errors.TokenInvalid("not a terminal token")
    return str(claims["hs"]), str(claims["vm"])


async def _call(fn: Any, *args: Any) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))


async def terminal_page(request: Request) -> Response:
    core = request.app.state.core
    try:
        read_terminal_token(core, request.query_params.get("token", ""))
    except errors.IDCSError as exc:
        return error_response(exc)
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))


async def terminal_socket(ws: WebSocket) -> None:
    core = ws.app.state.core
    try:
        hs_name, vm_uuid = read_terminal_token(core, ws.query_params.get("token", ""))
        async with core.db.session() as s:
            host = await get_host(s, hs_name)
            from sqlalchemy import select

            found = (await s.execute(select(VM.id).where(VM.host_id == host.id, VM.vm_uuid == vm_uuid))).first()
            if not found:
                raise errors.VMNotFound()
        cols = int(ws.query_params.get("cols", "80") or 80)
        rows = int(ws.query_params.get("rows", "24") or 24)
        channel: TerminalChannel = await core.call(host, "vm_terminal_open", long=True, vm_uuid=vm_uuid,
                                                   cols=cols, rows=rows)
    except (errors.IDCSError, ValueError) as exc:
        await ws.close(code=4403, reason=getattr(exc, "msg", str(exc))[:120])
        return
    await ws.accept()
    await core.audit(None, "vm.terminal", f"{hs_name}/{vm_uuid}", source_ip=ws.client.host if ws.client else "")

    async def pump_out() -> None:
        while True:
            data = await _call(channel.read)
            if not data:
                break
            await ws.send_bytes(data)

    out = asyncio.create_task(pump_out())
    try:
        while not out.done():
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("bytes") is not None:
                await _call(channel.write, message["bytes"])
            elif message.get("text") is not None:
                await _control(channel, message["text"])
    except WebSocketDisconnect:
        pass
    finally:
        out.cancel()
        try:
            await _call(channel.close)
        except Exception:  # the engine side may already be gone
            log.debug("closing terminal of %s/%s failed", hs_name, vm_uuid, exc_info=True)
        try:
            await ws.close()
        except RuntimeError:
            pass


async def _control(channel: TerminalChannel, text: str) -> None:
    """Text frames: ``{"type": "input", "data": "..."}`` or ``{"type": "resize", "cols", "rows"}``."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        await _call(channel.write, text.encode())
        return
    if msg.get("type") == "resize":
        await _call(channel.resize, int(msg.get("cols", 80)), int(msg.get("rows", 24)))
    elif msg.get("type") == "input":
        await _call(channel.write, str(msg.get("data", "")).encode())


routes = [Route("/console/terminal", terminal_page, methods=["GET"]),
          WebSocketRoute("/console/terminal/ws", terminal_socket)]
