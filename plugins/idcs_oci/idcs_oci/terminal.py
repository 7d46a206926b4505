"""An interactive shell in the container: ``docker exec`` with a TTY over a hijacked socket.

Docker has no "kill this exec" call, and closing the exec's socket does not end
its process (the shell and whatever runs in it stay, for ever). So each
terminal's exec carries a random marker in its environment, which every process
started in it inherits; ``close()`` runs a short script in the container that
hangs up (SIGHUP, then SIGKILL) every process carrying that marker, then
closes the socket both ways, which also wakes a ``read()`` blocked in another
thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import threading
import time
from typing import Any

import docker.errors

from idcs_oci import guest
from idcs_oci.client import Conn, is_local_socket

log = logging.getLogger("idcs.oci")

# /bin/sh starts bash when the image has it (a nicer shell), else stays itself.
SHELL = ["/bin/sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi"]
MARKER = "IDCS_TERMINAL"
# $1 is the marker (NAME=value, on the command line only: this script's own environment lacks it).
# Hang up every process whose environment holds it; what ignores the hang-up is killed after ~1 s.
KILL_SCRIPT = r"""
marked() {
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [ "$p" = "$$" ] && continue
    tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qxF "$1" && printf '%s ' "$p"
  done
}
pids=$(marked "$1")
[ -z "$pids" ] && exit 0
kill -HUP $pids 2>/dev/null
for i in 1 2 3 4 5 6 7 8 9 10; do
  sleep 0.1
  pids=$(marked "$1")
  [ -z "$pids" ] && exit 0
done
kill -KILL $pids 2>/dev/null
exit 0
"""


class ExecTerminal:
    """``read``/``write``/``resize``/``close`` over one exec session; ``read`` gives b"" at the end.

    ``read`` blocks until output comes (a terminal may stay idle for hours): callers give each
    open terminal a thread of its own for reading. ``close`` may be called from any thread.
    """

    def __init__(self, conn: Conn, exec_id: str, sock: Any, container_id: str = "", marker: str = "") -> None:
        self._conn = conn
        self.exec_id = exec_id
        self.container_id = container_id
        self.marker = marker
        self._sock = sock
        self._raw = guest.raw_socket(sock)
        if hasattr(self._raw, "settimeout"):
            self._raw.settimeout(None)
        self._closed = threading.Event()
        self._close_lock = threading.Lock()

    def read(self) -> bytes:
        if self._closed.is_set():
            return b""
        try:
            return bytes(self._raw.recv(65536))
        except (OSError, EOFError):
            return b""

    def write(self, data: bytes) -> None:
        if self._closed.is_set():
            raise OSError("terminal is closed")
        self._raw.sendall(data)

    def resize(self, cols: int, rows: int) -> None:
        if not self._closed.is_set():
            self._conn.api.exec_resize(self.exec_id, height=rows, width=cols)

    def close(self) -> None:
        """End the session: its processes are hung up, the socket closed. Safe to call twice."""
        with self._close_lock:
            if self._closed.is_set():
                return
            self._closed.set()
        try:
            self._end_processes()
        finally:
            try:
                if hasattr(self._raw, "shutdown_write"):  # paramiko channel (ssh://): close() wakes recv
                    self._raw.close()
                else:
                    self._raw.shutdown(socket.SHUT_RDWR)  # wakes a recv() blocked in another thread
            except OSError:
                pass
            try:
                self._raw.close()
            finally:
                self._sock.close()

    def _end_processes(self) -> None:
        """Hang up the session's processes in the container; never raises (logs instead)."""
        try:
            if not self._conn.api.exec_inspect(self.exec_id).get("Running"):
                return
            if self.marker and self.container_id:
                kill_id = self._conn.api.exec_create(
                    self.container_id, ["/bin/sh", "-c", KILL_SCRIPT, "idcs-hangup", f"{MARKER}={self.marker}"],
                    stdout=True, stderr=True)["Id"]
                self._conn.api.exec_start(kill_id)  # returns when the script has ended
            deadline = time.monotonic() + 2
            while True:
                info = self._conn.api.exec_inspect(self.exec_id)
                if not info.get("Running"):
                    return
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            # The image has no /proc, tr or grep: on a daemon of this machine, kill the marked
            # processes by their PIDs here (the environment check keeps other processes safe).
            if is_local_socket(self._conn) and self._marked(info.get("Pid") or 0):
                for pid in self._local_marked():
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                return
            log.warning("the shell of terminal %s in %s on %s is still running after close",
                        self.exec_id[:12], self.container_id[:12], self._conn.host.name)
        except (docker.errors.APIError, OSError) as exc:  # container gone or stopped meanwhile: fine
            log.debug("ending terminal %s: %s", self.exec_id[:12], exc)

    def _marked(self, pid: int) -> bool:
        """True if PID ``pid`` of this machine carries this session's marker (so it is one of its
        processes, not some other process with that number in our PID namespace)."""
        if pid <= 0:
            return False
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                return f"{MARKER}={self.marker}".encode() in f.read().split(b"\0")
        except OSError:
            return False

    def _local_marked(self) -> list[int]:
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and self._marked(int(p))]


def open_terminal(conn: Conn, vm_uuid: str, cols: int, rows: int) -> ExecTerminal:
    attrs = guest.require_running(conn, vm_uuid)
    marker = secrets.token_hex(12)
    exec_id = conn.api.exec_create(attrs["Id"], SHELL, stdin=True, stdout=True, stderr=True, tty=True,
                                   environment={"TERM": "xterm-256color", MARKER: marker})["Id"]
    sock = conn.api.exec_start(exec_id, socket=True, tty=True)
    term = ExecTerminal(conn, exec_id, sock, attrs["Id"], marker)
    if cols > 0 and rows > 0:
        term.resize(cols, rows)
    return term
