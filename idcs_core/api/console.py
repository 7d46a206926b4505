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
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
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


class TerminalBridge:
    """One open terminal's own threads, so open terminals never hold the event loop's shared
    executor (a handful of workers) nor each other.

    A plain (blocking) ``read`` runs in a thread of this terminal alone, feeding a small
    queue (so a fast producer waits for the websocket); ``write`` and ``resize`` run in
    order on one worker of this terminal; ``close`` runs in a thread of its own, so a write
    stuck on a full socket cannot delay it. ``async`` channel methods are awaited directly.
    """

    QUEUE = 64

    def __init__(self, channel: TerminalChannel, name: str = "") -> None:
        self.channel = channel
        self.name = name
        self.loop = asyncio.get_running_loop()
        self.output: asyncio.Queue[bytes] = asyncio.Queue(self.QUEUE)
        self._stop = threading.Event()
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"idcs-term-io-{name}")
        self._reader: threading.Thread | asyncio.Task[None] | None = None

    def start(self) -> None:
        if inspect.iscoroutinefunction(self.channel.read):
            self._reader = asyncio.create_task(self._read_async())
        else:
            self._reader = threading.Thread(target=self._read_blocking, name=f"idcs-term-read-{self.name}",
                                            daemon=True)
            self._reader.start()

    async def _read_async(self) -> None:
        try:
            while True:
                data = await self.channel.read()  # type: ignore[misc]
                await self.output.put(data)
                if not data:
                    return
        except Exception:
            log.debug("terminal %s: read failed", self.name, exc_info=True)
            await self.output.put(b"")

    def _read_blocking(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.channel.read()
            except Exception:
                log.debug("terminal %s: read failed", self.name, exc_info=True)
                data = b""
            if not self._hand_over(data) or not data:
                return

    def _hand_over(self, data: bytes) -> bool:
        """Put ``data`` on the queue from the reader thread, waiting while it is full; False once
        the bridge stops or the loop is gone."""
        try:
            fut = asyncio.run_coroutine_threadsafe(self.output.put(data), self.loop)
        except RuntimeError:  # the event loop is closed
            return False
        while True:
            try:
                fut.result(timeout=0.5)
                return True
            except FutureTimeout:
                if self._stop.is_set():
                    fut.cancel()
                    return False
            except (Exception, CancelledError):  # the loop went away meanwhile
                return False

    async def read(self) -> bytes:
        return await self.output.get()

    async def write(self, data: bytes) -> None:
        await self._run(self.channel.write, data)

    async def resize(self, cols: int, rows: int) -> None:
        await self._run(self.channel.resize, cols, rows)

    async def _run(self, fn: Any, *args: Any) -> Any:
        if inspect.iscoroutinefunction(fn):
            return await fn(*args)
        return await self.loop.run_in_executor(self._io, functools.partial(fn, *args))

    async def close(self) -> None:
        """Close the channel (in a thread of its own) and stop this bridge's threads."""
        self._stop.set()
        try:
            if inspect.iscoroutinefunction(self.channel.close):
                await self.channel.close()
            else:
                await _in_own_thread(self.channel.close, name=f"idcs-term-close-{self.name}")
        finally:
            if isinstance(self._reader, asyncio.Task):
                self._reader.cancel()
            self._io.shutdown(wait=False, cancel_futures=True)


def _in_own_thread(fn: Any, *args: Any, name: str = "") -> asyncio.Future[Any]:
    """Run ``fn(*args)`` in a new thread; an awaitable for its result."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    def run() -> None:
        result, exc = None, None
        try:
            result = fn(*args)
        except BaseException as e:  # handed to the awaiting coroutine
            exc = e
        try:
            loop.call_soon_threadsafe(settle, result, exc)
        except RuntimeError:  # the event loop is closed: nobody waits any more
            pass

    threading.Thread(target=run, name=name or "idcs-term", daemon=True).start()
    return fut


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

    bridge = TerminalBridge(channel, vm_uuid)
    bridge.start()

    async def pump_out() -> None:
        while True:
            data = await bridge.read()
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
                await bridge.write(message["bytes"])
            elif message.get("text") is not None:
                await _control(bridge, message["text"])
    except WebSocketDisconnect:
        pass
    finally:
        out.cancel()
        try:
            await bridge.close()
        except Exception:  # the engine side may already be gone
            log.debug("closing terminal of %s/%s failed", hs_name, vm_uuid, exc_info=True)
        try:
            await ws.close()
        except RuntimeError:
            pass


async def _control(bridge: TerminalBridge, text: str) -> None:
    """Text frames: ``{"type": "input", "data": "..."}`` or ``{"type": "resize", "cols", "rows"}``."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        await bridge.write(text.encode())
        return
    if msg.get("type") == "resize":
        await bridge.resize(int(msg.get("cols", 80)), int(msg.get("rows", 24)))
    elif msg.get("type") == "input":
        await bridge.write(str(msg.get("data", "")).encode())


routes = [Route("/console/terminal", terminal_page, methods=["GET"]),
          WebSocketRoute("/console/terminal/ws", terminal_socket)]
