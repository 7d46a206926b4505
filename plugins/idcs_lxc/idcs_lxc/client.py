"""How the engine reaches a host: this machine, or one SSH connection per host.

Every LXC tool runs as an argv list: locally through ``asyncio.create_subprocess_exec``,
remotely as ``shlex.join`` of the same fixed argv over the host's one SSH connection
(asyncssh), which is reused by every call and opened again when it drops. User input
never becomes shell text; data (configs, passwords) travels on stdin.

The coroutines run on one background event loop per engine (``EngineLoop``); the hooks
are plain functions that the core runs in worker threads, and wait on that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import asyncssh

from idcs_core import enginekit, errors
from idcs_core.types import HostSpec
from idcs_lxc.host import Options, options_of

T = TypeVar("T")


@dataclass(frozen=True)
class Address:
    """Where a host is: ``local`` (this machine) or an SSH endpoint."""

    local: bool
    host: str = ""
    port: int = 22
    user: str = ""

    @property
    def label(self) -> str:
        return "local" if self.local else f"{self.user}@{self.host}:{self.port}"


def parse_addr(addr: str, user: str = "") -> Address:
    """Parse ``local`` or ``ssh://user@host[:port]`` (the user may also come from ``server_user``)."""
    text = (addr or "").strip()
    if text in ("local", "localhost-lxc", ""):
        return Address(local=True)
    parts = urlsplit(text)
    if parts.scheme != "ssh" or not parts.hostname:
        raise errors.BadRequest(f"server_addr must be 'local' or 'ssh://user@host[:port]', not {addr!r}")
    try:
        port = parts.port or 22
    except ValueError as exc:
        raise errors.BadRequest(f"bad port in server_addr {addr!r}") from exc
    login = unquote(parts.username or "") or user or "root"
    return Address(local=False, host=parts.hostname, port=port, user=login)


@dataclass
class Result:
    """The outcome of one command on the host."""

    code: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace").strip()


class EngineLoop:
    """A private asyncio loop in a daemon thread: where SSH connections and subprocesses live."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="idcs-lxc-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for it (from any other thread)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError as exc:
            future.cancel()
            raise errors.HostUnreachable(f"the host did not answer within {timeout:.0f} s") from exc


class PinStore:
    """Host keys pinned on first use: a small JSON file ``{"host:port": "ssh-ed25519 AAAA..."}``."""

    def __init__(self, path: str) -> None:
        self.path = Path(os.path.expanduser(path))
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._read().get(key)

    def put(self, key: str, value: str) -> None:
        with self._lock:
            pins = self._read()
            pins[key] = value
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(pins, indent=1, sort_keys=True))
            tmp.replace(self.path)

    def _read(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.path.read_text()))
        except (OSError, ValueError):
            return {}


def _key_words(text: str) -> tuple[str, ...]:
    """``ssh-ed25519 AAAA... comment`` -> (type, base64): what identifies a public key."""
    return tuple(text.split()[:2])


class _PinningClient(asyncssh.SSHClient):
    """Accepts the server's host key only if it is the expected one (typed option or first use)."""

    def __init__(self, check: Any) -> None:
        self._check = check
        self.lost = False

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        return bool(self._check(key))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class SSHTransport:
    """One SSH connection to one host, opened lazily, reused, reopened after it drops."""

    def __init__(self, addr: Address, password: str, opts: Options) -> None:
        self.addr = addr
        self.password = password
        self.opts = opts
        self.pins = PinStore(opts.known_hosts)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._client: _PinningClient | None = None
        self._lock: asyncio.Lock | None = None
        self.mismatch: str | None = None
        self.connects = 0  # how many times a connection was opened (tests and the bench read it)
        self.commands = 0  # how many remote commands ran

    def _pin_key(self) -> str:
        return f"{self.addr.host}:{self.addr.port}"

    def _check_key(self, key: asyncssh.SSHKey) -> bool:
        seen = key.export_public_key("openssh").decode().strip()
        expected = self.opts.host_key or self.pins.get(self._pin_key())
        if not expected:
            self.pins.put(self._pin_key(), " ".join(_key_words(seen)))
            return True
        if _key_words(seen) == _key_words(expected):
            return True
        self.mismatch = (f"the SSH host key of {self.addr.host}:{self.addr.port} ({key.get_fingerprint()}) is not "
                         "the pinned one: refusing to connect (set the host_key option if it changed on purpose)")
        return False

    async def connection(self) -> asyncssh.SSHClientConnection:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._conn is not None and self._client is not None and not self._client.lost:
                return self._conn
            await self._drop()
            self.mismatch = None
            keys = [asyncssh.import_private_key(self.opts.ssh_key_text())] if self.opts.ssh_key else None
            client = _PinningClient(self._check_key)
            try:
                conn, _ = await asyncio.wait_for(asyncssh.create_connection(
                    lambda: client, self.addr.host, self.addr.port, username=self.addr.user,
                    password=self.password or None, client_keys=keys, agent_path=None,
                    known_hosts=([], [], []), config=[], keepalive_interval=5, keepalive_count_max=2,
                    login_timeout=self.opts.connect_timeout), self.opts.connect_timeout)
            except asyncssh.PermissionDenied as exc:
                raise errors.HostUnreachable(f"SSH login to {self.addr.label} failed: wrong password or key") from exc
            except asyncssh.HostKeyNotVerifiable as exc:
                raise errors.HostUnreachable(self.mismatch or f"host key not accepted: {exc}") from exc
            except (OSError, TimeoutError, asyncssh.Error) as exc:
                if self.mismatch:
                    raise errors.HostUnreachable(self.mismatch) from exc
                raise errors.HostUnreachable(f"cannot reach {self.addr.label} over SSH: "
                                             f"{exc or type(exc).__name__}") from exc
            self._conn, self._client = conn, client
            self.connects += 1
            return conn

    async def _drop(self) -> None:
        conn, self._conn, self._client = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    async def exec(self, argv: list[str], stdin: bytes | None, timeout: float) -> Result:
        command = shlex.join(argv)
        for attempt in (1, 2):
            conn = await self.connection()
            try:
                self.commands += 1
                done = await asyncio.wait_for(conn.run(command, input=stdin, encoding=None, check=False), timeout)
            except (asyncssh.ConnectionLost, asyncssh.ChannelOpenError, ConnectionError, BrokenPipeError) as exc:
                await self._drop()
                if attempt == 2:
                    raise errors.HostUnreachable(f"the SSH connection to {self.addr.label} dropped: {exc}") from exc
                continue
            except TimeoutError as exc:
                raise errors.HostUnreachable(f"{argv[0]} on {self.addr.label} did not finish within "
                                             f"{timeout:.0f} s") from exc
            code = done.exit_status if done.exit_status is not None else 255
            return Result(code, _as_bytes(done.stdout), _as_bytes(done.stderr))
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self._drop()


class LocalTransport:
    """This machine: each command is a subprocess with an argv list."""

    connects = 0
    commands = 0

    async def exec(self, argv: list[str], stdin: bytes | None, timeout: float) -> Result:
        self.commands += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except FileNotFoundError as exc:
            raise errors.HostUnreachable(f"{argv[0]} is not installed on this machine (install lxc)") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except TimeoutError as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise errors.VMOperationFailed(f"{argv[0]} did not finish within {timeout:.0f} s") from exc
        return Result(proc.returncode if proc.returncode is not None else 255, out, err)

    async def close(self) -> None:
        return None


Transport = SSHTransport | LocalTransport


class Session:
    """One host as the engine uses it: its options, its transport and the engine's loop."""

    def __init__(self, host: HostSpec, loop: EngineLoop) -> None:
        self.host = host
        self.opts = options_of(host)
        self.addr = parse_addr(host.addr, host.user)
        self.loop = loop
        self.transport: Transport = (LocalTransport() if self.addr.local
                                     else SSHTransport(self.addr, host.password, self.opts))
        self.cache: dict[str, Any] = {}  # per-host facts (cgroup version, cpu count)

    def run(self, argv: list[str], stdin: bytes | None = None, timeout: float | None = None) -> Result:
        """Run one command on the host and return its result (any exit code)."""
        limit = timeout if timeout is not None else self.opts.timeout
        return self.loop.run(self.transport.exec([str(a) for a in argv], stdin, limit), limit + 10)

    def check(self, argv: list[str], what: str, stdin: bytes | None = None, timeout: float | None = None) -> Result:
        """Run a command that must succeed; a failure becomes ``VMOperationFailed`` naming ``what``."""
        result = self.run(argv, stdin, timeout)
        if result.code != 0:
            detail = result.err or result.out.strip() or f"exit code {result.code}"
            raise errors.VMOperationFailed(f"{what} failed: {detail[-400:]}")
        return result

    def lxc(self, tool: str, *args: str) -> list[str]:
        """The argv of an LXC tool on this host's lxcpath: ``lxc(\"lxc-info\", \"-n\", name)``."""
        return [tool, "-P", self.opts.lxcpath, *args]

    def write_file(self, path: str, data: bytes, what: str) -> None:
        """Replace the file ``path`` on the host with ``data`` (atomically, through stdin)."""
        self.check(["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1.idcs-tmp" && mv "$1.idcs-tmp" "$1"',
                    "idcs-write", path], what, stdin=data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.run(self.transport.close(), 10)


class SessionCache(enginekit.SessionCache[Session]):
    """One ``Session`` per host and options (the toolkit's cache), all on one ``EngineLoop``:
    ``drop(host)`` closes the host's SSH connection, the next call connects afresh."""

    def __init__(self) -> None:
        self.loop = EngineLoop()
        super().__init__(lambda host: Session(host, self.loop), Session.close,
                         key=lambda host: (host, options_of(host)))


def _as_bytes(data: bytes | str | None) -> bytes:
    """asyncssh gives bytes when the session's encoding is None (ours), str otherwise."""
    if data is None:
        return b""
    return data.encode() if isinstance(data, str) else bytes(data)
