"""A bridge between a browser's websocket and an engine's ``TerminalChannel``."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
from concurrent.futures import CancelledError, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from idcs_core.types import TerminalChannel

log = logging.getLogger("idcs.console")


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
