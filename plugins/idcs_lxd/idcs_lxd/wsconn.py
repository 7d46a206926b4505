"""Connecting to an LXD operation's websockets (exec stdin/stdout/control) with ``websockets``.

Works over the unix socket and over https (with the engine's client certificate).
pylxd's own websocket code (ws4py) is not interactive; this is the small piece
both ``guest.run`` and ``terminal.Terminal`` need.
"""

from __future__ import annotations

import inspect
import ssl
from typing import Any
from urllib import parse

from pylxd import Client
from websockets.sync.client import ClientConnection, connect, unix_connect

from idcs_lxd.client import operation_id

OPEN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 1.0  # LXD does not always answer a close frame: do not wait long for it

# websockets >= 16 warns unless the direct (non context-manager) style is asked for.
_LEGACY: dict[str, Any] = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}


def _ssl_context(client: Client) -> ssl.SSLContext:
    session = client.api.session
    ctx = ssl.create_default_context()
    if session.verify is False:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif isinstance(session.verify, str):
        ctx.check_hostname = False  # LXD certificates name no host; pin the given one
        ctx.load_verify_locations(session.verify)
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
    return connect(f"wss://{client.api.netloc}{path}", ssl=_ssl_context(client), **kwargs)
