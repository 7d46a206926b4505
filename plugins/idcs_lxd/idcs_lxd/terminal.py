"""An interactive shell in an instance over LXD's exec websockets: a ``TerminalChannel``.

``POST /1.0/instances/<n>/exec`` with ``interactive: true`` and
``wait-for-websocket: true`` gives two secrets: ``0`` (the pty, both ways) and
``control`` (window size, signals). When the shell exits LXD closes the control
websocket; ``read`` then returns what is left of the output, and ``b""``.
"""

from __future__ import annotations

import json
import threading

from pylxd import Client
from websockets.exceptions import ConnectionClosed

from idcs_core import errors
from idcs_lxd import instances, wsconn
from idcs_lxd.naming import instance_name

SHELL = ["/bin/sh", "-c", "if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi"]
POLL = 0.2  # seconds read() waits between checks that the shell is still there


class Terminal:
    """A shell in the instance. ``read``/``write``/``resize``/``close`` are thread-safe."""

    def __init__(self, client: Client, vm_uuid: str, cols: int = 80, rows: int = 24,
                 command: list[str] | None = None) -> None:
        name = instance_name(vm_uuid)
        if instances.status(client, name) != "Running":
            raise errors.VMOperationFailed(f"{name} is not running: start it to open a terminal")
        self.name = name
        response = client.api.instances[name]["exec"].post(json={
            "command": command or SHELL,
            "environment": {"TERM": "xterm-256color", "HOME": "/root"},
            "interactive": True, "wait-for-websocket": True,
            "width": int(cols), "height": int(rows),
        })
        body = response.json()
        self.operation = body["operation"]
        fds = body["metadata"]["metadata"]["fds"]
        conns = wsconn.open_fds(client, self.operation, fds, ("0", "control"))
        self._data, self._control = conns["0"], conns["control"]
        self._exited = threading.Event()
        self._closed = threading.Event()
        self._watcher = threading.Thread(target=self._watch_control, name=f"lxd-term-{name}", daemon=True)
        self._watcher.start()

    def _watch_control(self) -> None:
        """LXD closes the control websocket when the shell process ends."""
        try:
            while True:
                self._control.recv()
        except Exception:
            pass
        finally:
            self._exited.set()

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    def read(self) -> bytes:
        """The next chunk of output; ``b""`` once the shell has exited or the channel is closed."""
        while not self._closed.is_set():
            try:
                message = self._data.recv(timeout=POLL)
            except TimeoutError:
                if self._exited.is_set():
                    self._data.close()
                    return b""
                continue
            except ConnectionClosed:
                return b""
            data = message if isinstance(message, bytes) else message.encode()
            if data:
                return data
        return b""

    def write(self, data: bytes) -> None:
        if self._closed.is_set() or self._exited.is_set():
            raise errors.VMOperationFailed("the terminal has ended")
        try:
            self._data.send(bytes(data))
        except ConnectionClosed as exc:
            raise errors.VMOperationFailed("the terminal has ended") from exc

    def resize(self, cols: int, rows: int) -> None:
        message = {"command": "window-resize", "args": {"width": str(int(cols)), "height": str(int(rows))}}
        try:
            self._control.send(json.dumps(message))
        except ConnectionClosed:
            pass

    def close(self) -> None:
        """Hang up: closing the pty websocket ends the shell (SIGHUP). Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        for conn in (self._data, self._control):
            try:
                conn.close()
            except Exception:
                pass
        self._watcher.join(timeout=2)
