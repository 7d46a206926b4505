"""An interactive shell in the container: ``docker exec`` with a TTY over a hijacked socket."""

from __future__ import annotations

import threading
from typing import Any

from idcs_oci import guest
from idcs_oci.client import Conn

# /bin/sh starts bash when the image has it (a nicer shell), else stays itself.
SHELL = ["/bin/sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi"]


class ExecTerminal:
    """``read``/``write``/``resize``/``close`` over one exec session; ``read`` gives b"" at the end."""

    def __init__(self, conn: Conn, exec_id: str, sock: Any) -> None:
        self._conn = conn
        self.exec_id = exec_id
        self._sock = sock
        self._raw = guest.raw_socket(sock)
        if hasattr(self._raw, "settimeout"):
            self._raw.settimeout(None)  # a terminal may stay idle for hours
        self._closed = threading.Event()

    def read(self) -> bytes:
        if self._closed.is_set():
            return b""
        try:
            return self._raw.recv(65536)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        if self._closed.is_set():
            raise OSError("terminal is closed")
        self._raw.sendall(data)

    def resize(self, cols: int, rows: int) -> None:
        if not self._closed.is_set():
            self._conn.api.exec_resize(self.exec_id, height=rows, width=cols)

    def close(self) -> None:
        """End the session: the shell sees a hang-up and exits. Safe to call twice."""
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            guest.shutdown_write(self._sock)
        except OSError:
            pass
        try:
            self._raw.close()
        finally:
            self._sock.close()


def open_terminal(conn: Conn, vm_uuid: str, cols: int, rows: int) -> ExecTerminal:
    attrs = guest.require_running(conn, vm_uuid)
    exec_id = conn.api.exec_create(attrs["Id"], SHELL, stdin=True, stdout=True, stderr=True, tty=True,
                                   environment={"TERM": "xterm-256color"})["Id"]
    sock = conn.api.exec_start(exec_id, socket=True, tty=True)
    term = ExecTerminal(conn, exec_id, sock)
    if cols > 0 and rows > 0:
        term.resize(cols, rows)
    return term
