"""Connecting to an LXD operation's websockets (exec stdin/stdout/control) with ``websockets``.

Works over the unix socket and over https (with the engine's client certificate).
Over https the server certificate is checked as for the REST calls (``client``):
the pinned fingerprint right after the TLS handshake, before the websocket
request (which carries the operation's secret) is written; or, with
``verify_tls``, the system CAs and the host name. pylxd's own websocket code
(ws4py) is not interactive; this is the small piece both ``guest.run`` and
``terminal.Terminal`` need.
"""

from __future__ import annotations

import inspect
import ssl
from typing import Any
from urllib import parse

from pylxd import Client
from websockets.sync.client import ClientConnection, connect, unix_connect

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


def open_fd(client: Client, operation: str, secret: str) -> ClientConnection:
    """Open the websocket of one file descriptor (``secret``) of an exec operation."""
    path = f"/1.0/operations/{operation_id(operation)}/websocket?secret={parse.quote(secret)}"
    kwargs: dict[str, Any] = {"max_size": None, "compression": None, "open_timeout": OPEN_TIMEOUT,
                              "close_timeout": CLOSE_TIMEOUT, "origin": None, **_LEGACY}
    if client.api.scheme == "http+unix":
        socket_path = parse.unquote(client.api.netloc)
        return unix_connect(socket_path, f"ws://localhost{path}", **kwargs)
    try:
        return connect(f"wss://{client.api.netloc}{path}", ssl=_ssl_context(client), proxy=None, **kwargs)
    except CertificateChanged as exc:
        raise errors.HostUnreachable(f"the TLS certificate of https://{client.api.netloc} changed: {exc}; "
                                     "refusing to connect") from exc
