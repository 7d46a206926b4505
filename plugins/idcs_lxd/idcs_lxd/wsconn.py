"""Connecting to an LXD operation's websockets (exec stdin/stdout/control) with ``websockets``.

Works over the unix socket and over https (with the engine's client certificate).
Over https the server certificate is checked as for the REST calls (``client``):
the pinned fingerprint right after the TLS handshake, before the websocket
request (which carries the operation's secret) is written; or, with
``verify_tls``, the system CAs and the host name. pylxd's own websocket code
(ws4py) is not interactive; this is the small piece both ``guest.run`` and
``terminal.Terminal`` need.

Every open is bounded (``OPEN_TIMEOUT``): the socket is ours (connected and, over https,
TLS-wrapped here with a timeout) and handed to ``websockets``; the websocket handshake runs
in a helper thread, and if the back end has not answered by the deadline the socket is shut
down under it (which also ends the thread ``websockets`` joins when its handshake fails) and
the caller gets ``HostUnreachable`` -- a back end that accepts and never answers costs
``OPEN_TIMEOUT`` seconds, not a hung worker.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib import parse

from pylxd import Client
from websockets.sync.client import ClientConnection, connect

from idcs_core import errors
from idcs_lxd.client import fingerprint, operation_id

OPEN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 1.0  # LXD does not always answer a close frame: do not wait long for it

# websockets >= 16 warns unless the direct (non context-manager) style is asked for.
_LEGACY: dict[str, Any] = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}


class CertificateChanged(ssl.SSLError):
    """The server presented a certificate other than the pinned one."""


class PinnedContext(ssl.SSLContext):
    """A TLS context that accepts exactly one server certificate (by SHA-256)."""

    expected: str = ""

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        tls = super().wrap_socket(*args, **kwargs)  # the handshake is done here
        der = tls.getpeercert(binary_form=True) or b""
        if fingerprint(der) != self.expected:
            tls.close()
            raise CertificateChanged(f"the server presents SHA-256 {fingerprint(der)}, "
                                     f"not the pinned {self.expected}")
        return tls


def _ssl_context(client: Client) -> ssl.SSLContext:
    session = client.api.session
    expected = getattr(session, "idcs_fingerprint", None)
    ctx: ssl.SSLContext
    if expected:
        ctx = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.expected = expected
        ctx.check_hostname = False  # LXD certificates name no host: the fingerprint is the check
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context()  # verify_tls: system CAs and the host name
    if isinstance(session.cert, tuple):
        ctx.load_cert_chain(session.cert[0], session.cert[1])
    return ctx


def open_fd(client: Client, operation: str, secret: str, timeout: float = OPEN_TIMEOUT) -> ClientConnection:
    """Open the websocket of one file descriptor (``secret``) of an exec operation, within ``timeout``."""
    path = f"/1.0/operations/{operation_id(operation)}/websocket?secret={parse.quote(secret)}"
    if client.api.scheme == "http+unix":
        socket_path = parse.unquote(client.api.netloc)
        return open_websocket(lambda: _unix_socket(socket_path, timeout), f"ws://localhost{path}", None,
                              timeout, f"the LXD socket {socket_path}")
    parts = parse.urlsplit(f"//{client.api.netloc}")
    address = (parts.hostname or "", parts.port or 8443)
    return open_websocket(lambda: socket.create_connection(address, timeout=timeout),
                          f"ws://{client.api.netloc}{path}", _ssl_context(client), timeout,
                          f"https://{client.api.netloc}")


def open_fds(client: Client, operation: str, secrets: dict[str, str],
             names: tuple[str, ...]) -> dict[str, ClientConnection]:
    """The websockets ``names`` (``"control"``, ``"0"``...) of an exec operation, each opened within
    ``OPEN_TIMEOUT``. If one cannot be opened, those already open are closed and the operation is
    cancelled (LXD would otherwise keep the command waiting for its websockets), then the error raised."""
    opened: dict[str, ClientConnection] = {}
    try:
        for name in names:
            opened[name] = open_fd(client, operation, secrets[name])
    except BaseException:
        for conn in opened.values():
            with contextlib.suppress(Exception):
                conn.close()
        with contextlib.suppress(Exception):
            client.api.operations[operation_id(operation)].delete()
        raise
    return opened


def _unix_socket(path: str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def open_websocket(connect_socket: Callable[[], socket.socket], uri: str, tls: ssl.SSLContext | None,
                   timeout: float, where: str) -> ClientConnection:
    """A websocket at ``uri`` (``ws://``: TLS, when ``tls`` is given, is done here on our own socket)
    opened within ``timeout`` seconds, else ``HostUnreachable`` naming ``where``."""
    deadline = time.monotonic() + timeout
    try:
        raw = connect_socket()  # bounded by the socket's own timeout
    except (TimeoutError, OSError) as exc:
        raise errors.HostUnreachable(f"cannot open a websocket to {where}: {exc or type(exc).__name__}") from exc
    # shutdown(2) acts on the socket, not the descriptor: a duplicate lets us end it under any wrapper
    waker = socket.socket(fileno=os.dup(raw.fileno()))
    outcome: list[ClientConnection | BaseException] = []
    phase = ["the websocket upgrade"]  # what was waited for, named in the error (a diagnosis)

    def handshake() -> None:
        try:
            sock: socket.socket = raw
            if tls is not None:
                phase[0] = "the TLS handshake"
                sock = tls.wrap_socket(raw, server_hostname=parse.urlsplit(uri).hostname)
            sock.settimeout(None)  # websockets waits on its own (select) from here
            phase[0] = "the websocket upgrade"
            outcome.append(connect(uri, sock=sock, max_size=None, compression=None, origin=None,
                                   open_timeout=max(deadline - time.monotonic(), 0.1),
                                   close_timeout=CLOSE_TIMEOUT, **_LEGACY))
        except BaseException as exc:  # handed to the caller below
            outcome.append(exc)

    worker = threading.Thread(target=handshake, name="lxd-ws-open", daemon=True)
    try:
        worker.start()
        worker.join(max(deadline - time.monotonic(), 0) + CLOSE_TIMEOUT)
        if worker.is_alive() or not outcome:
            with contextlib.suppress(OSError):
                waker.shutdown(socket.SHUT_RDWR)  # whatever the thread waits on returns now
            worker.join(CLOSE_TIMEOUT + 1)
            _close_late(worker, outcome)
            raise errors.HostUnreachable(f"{where} did not answer a websocket open within {timeout:g} s "
                                         f"(no answer to {phase[0]})")
    finally:
        waker.close()
    result = outcome[0]
    if isinstance(result, ClientConnection):
        return result
    raw.close()
    if isinstance(result, CertificateChanged):
        raise errors.HostUnreachable(f"the TLS certificate of {where} changed: {result}; "
                                     "refusing to connect") from result
    if isinstance(result, TimeoutError):
        raise errors.HostUnreachable(f"{where} did not answer a websocket open within {timeout:g} s "
                                     f"(no answer to {phase[0]})") from result
    raise result


def _close_late(worker: threading.Thread, outcome: list[ClientConnection | BaseException]) -> None:
    """A connection the thread opened after all (just at the deadline) is closed, not leaked."""
    if not worker.is_alive():
        for item in outcome:
            if isinstance(item, ClientConnection):
                item.close()
