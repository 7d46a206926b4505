"""The serial console (ttyS0) as a terminal, through a libvirt stream."""

from __future__ import annotations

import contextlib
import threading

import libvirt

from idcs_core.errors import VMOperationFailed


class SerialTerminal:
    """A ``TerminalChannel`` over ``virDomainOpenConsole`` (blocking stream, worker threads).

    It owns ``conn``, a connection of its own (closed with the terminal), so that a blocking
    read never holds up the host's shared connection."""

    def __init__(self, conn: libvirt.virConnect, uuid: str) -> None:
        self._conn = conn
        try:
            dom = conn.lookupByUUIDString(uuid)
            if not dom.isActive():
                raise VMOperationFailed("the VM is not running: its serial console is closed")
            self._stream = conn.newStream(0)
            dom.openConsole(None, self._stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
            raise
        self._closed = threading.Event()

    def read(self) -> bytes:
        if self._closed.is_set():
            return b""
        try:
            data = self._stream.recv(65536)
        except libvirt.libvirtError:
            return b""
        if isinstance(data, int):  # only non-blocking streams answer -2 (would block)
            return b""
        return bytes(data)

    def write(self, data: bytes) -> None:
        if self._closed.is_set():
            return
        try:
            self._stream.send(data)
        except libvirt.libvirtError as exc:
            raise VMOperationFailed(f"serial console: {exc.get_error_message()}") from None

    def resize(self, cols: int, rows: int) -> None:
        """A serial line has no window size: nothing to do."""

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.abort()
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()
