"""An interactive shell in a container through ``lxc-attach``: locally on a PTY, remotely on an
SSH channel with a terminal (both make ``lxc-attach`` give the shell a terminal of its own)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import select
import shlex
import struct
import termios
from typing import Any

from idcs_core import errors
from idcs_lxc.client import Session, SSHTransport

READY_WAIT = 3.0  # seconds to wait for the shell's first output
SHELL = "if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi"


def _argv(session: Session, name: str) -> list[str]:
    return session.lxc("lxc-attach", "-n", name, "--clear-env", "--set-var", "TERM=xterm-256color",
                       "--set-var", "HOME=/root", "--", "/bin/sh", "-c", SHELL)


def _running(session: Session, name: str) -> None:
    state = session.run(session.lxc("lxc-info", "-n", name, "-sH"))
    if state.code != 0:
        raise errors.VMNotFound(f"container {name} is not on the host")
    if state.out.strip() != "RUNNING":
        raise errors.VMOperationFailed(f"{name} is not running: start it to open a terminal")


def _take_terminal() -> None:
    """In the child: a session of its own with the PTY as controlling terminal (lxc-attach needs one)."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class LocalTerminal:
    """lxc-attach on a pseudo-terminal of this machine."""

    def __init__(self, session: Session, name: str, cols: int, rows: int) -> None:
        self.session = session
        self.master, slave = pty.openpty()
        self._size(cols, rows)
        try:
            self.proc: Any = session.loop.run(asyncio.create_subprocess_exec(
                *_argv(session, name), stdin=slave, stdout=slave, stderr=slave, cwd="/",
                preexec_fn=_take_terminal), 15)
        finally:
            os.close(slave)
        self._closed = False
        # lxc-attach flushes pending input when it switches the terminal to raw mode: hand the
        # channel over only once the shell has spoken, so nothing typed early is lost
        self._first = b""
        ready, _, _ = select.select([self.master], [], [], READY_WAIT)
        if ready:
            with contextlib.suppress(OSError):
                self._first = os.read(self.master, 65536)

    def _size(self, cols: int, rows: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", int(rows), int(cols), 0, 0))

    def read(self) -> bytes:
        if self._first:
            first, self._first = self._first, b""
            return first
        while not self._closed:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if not ready:
                continue
            try:
                return os.read(self.master, 65536) or b""
            except OSError:  # EIO: the shell exited
                return b""
        return b""

    def write(self, data: bytes) -> None:
        if not self._closed:
            os.write(self.master, data)

    def resize(self, cols: int, rows: int) -> None:
        if not self._closed:
            self._size(cols, rows)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.session.loop.run(self.proc.wait(), 5)
        with contextlib.suppress(OSError):
            os.close(self.master)


class RemoteTerminal:
    """lxc-attach on an SSH channel (with a terminal) of the host's one connection."""

    def __init__(self, session: Session, name: str, cols: int, rows: int) -> None:
        assert isinstance(session.transport, SSHTransport)
        self.session = session
        transport = session.transport

        async def open_process() -> Any:
            conn = await transport.connection()
            return await conn.create_process(shlex.join(_argv(session, name)), term_type="xterm-256color",
                                             term_size=(int(cols), int(rows)), encoding=None)

        self.proc: Any = session.loop.run(open_process(), 20)
        self._closed = False
        self._first = b""  # as locally: wait for the shell to speak before typing reaches it
        with contextlib.suppress(Exception):
            self._first = bytes(session.loop.run(asyncio.wait_for(self.proc.stdout.read(65536), READY_WAIT),
                                                 READY_WAIT + 2))

    def read(self) -> bytes:
        if self._first:
            first, self._first = self._first, b""
            return first
        if self._closed:
            return b""
        try:
            return bytes(self.session.loop.run(self.proc.stdout.read(65536)))
        except Exception:
            return b""

    def write(self, data: bytes) -> None:
        async def send() -> None:
            self.proc.stdin.write(data)

        if not self._closed:
            self.session.loop.run(send(), 10)

    def resize(self, cols: int, rows: int) -> None:
        async def change() -> None:
            self.proc.change_terminal_size(int(cols), int(rows))

        if not self._closed:
            self.session.loop.run(change(), 10)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        async def end() -> None:
            self.proc.close()

        with contextlib.suppress(Exception):
            self.session.loop.run(end(), 5)


def open_terminal(session: Session, name: str, cols: int, rows: int) -> LocalTerminal | RemoteTerminal:
    _running(session, name)
    if session.addr.local:
        return LocalTerminal(session, name, cols, rows)
    return RemoteTerminal(session, name, cols, rows)
