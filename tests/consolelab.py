"""TestLab with consoles: ``vm_console`` points at a VNC server the test chose (``vnc``), and
``vm_terminal_open`` gives a line-echo terminal that names its VM, so a test sees which VM a
console link reached."""

from __future__ import annotations

import queue
from typing import Any

from testlab import TestLabEngine

from idcs_core import errors
from idcs_core.hookspecs import hookimpl
from idcs_core.types import ConsoleEndpoint, HostSpec


class EchoTerminal:
    """Says ``hello from <vm> <cols>x<rows>``, then echoes what is typed; ``resize`` is shown too."""

    def __init__(self, vm_uuid: str, cols: int, rows: int) -> None:
        self.output: queue.Queue[bytes] = queue.Queue()
        self.output.put(f"hello from {vm_uuid} {cols}x{rows}\r\n".encode())

    def read(self) -> bytes:
        return self.output.get()

    def write(self, data: bytes) -> None:
        self.output.put(b"echo:" + data)

    def resize(self, cols: int, rows: int) -> None:
        self.output.put(f"[size {cols}x{rows}]".encode())

    def close(self) -> None:
        self.output.put(b"")


class ConsoleLabEngine(TestLabEngine):
    __test__ = False

    def __init__(self) -> None:
        super().__init__()
        self.vnc: ConsoleEndpoint | None = None

    @hookimpl
    def vm_console(self, host: HostSpec, vm_uuid: str, ref: str) -> ConsoleEndpoint:
        self._vm(host, vm_uuid, "vm_console", ref)
        if self.vnc is None:
            raise errors.VMOperationFailed("no VNC server in this test")
        return self.vnc

    @hookimpl
    def vm_terminal_open(self, host: HostSpec, vm_uuid: str, ref: str, cols: int, rows: int) -> Any:
        self._vm(host, vm_uuid, "vm_terminal_open", ref)
        return EchoTerminal(vm_uuid, cols, rows)
