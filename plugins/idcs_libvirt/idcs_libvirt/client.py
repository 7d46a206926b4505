"""libvirt connections: opened with the host's credentials, one kept per host in the toolkit's
``SessionCache`` and re-opened when it is no longer alive.

``connections()`` makes the engine's cache; ``connection(cache, host)`` is the host's live
connection; ``open_connection`` gives a caller one of its own (long-lived console streams).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from idcs_core.enginekit import SessionCache
from idcs_core.errors import BadRequest, HostUnreachable
from idcs_core.types import HostSpec

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised, not printed

Connections = SessionCache[libvirt.virConnect]


Started = TypeVar("Started", libvirt.virStoragePool, libvirt.virNetwork)


def active(lookup: Callable[[str], Started], name: str, missing: int, what: str, option: str) -> Started:
    """The pool or network ``name`` (by ``lookup``), started if it was not; a ``BadRequest``
    naming the host ``option`` when libvirt answers ``missing`` (it has none of that name)."""
    try:
        found = lookup(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == missing:
            raise BadRequest(f"the host has no {what} {name!r} (host option {option!r})") from None
        raise
    if not found.isActive():
        found.create()
    return found


def _auth_callback(host: HostSpec) -> list[Any]:
    """Credentials for SASL-protected URIs (qemu+tcp); ssh URIs use the server's own ssh keys."""

    def answer(creds: list[list[Any]], _data: object) -> int:
        for cred in creds:
            if cred[0] == libvirt.VIR_CRED_AUTHNAME:
                cred[4] = host.user
            elif cred[0] == libvirt.VIR_CRED_PASSPHRASE:
                cred[4] = host.password
            else:
                return -1
        return 0

    return [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], answer, None]


def open_connection(host: HostSpec) -> libvirt.virConnect:
    """A new connection to the host's URI (``qemu:///system`` when empty). Raises ``HostUnreachable``."""
    uri = host.addr.strip() or "qemu:///system"
    try:
        if host.user or host.password:
            return libvirt.openAuth(uri, _auth_callback(host), 0)
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        code = exc.get_error_code()
        if code == libvirt.VIR_ERR_AUTH_FAILED:
            raise HostUnreachable(f"libvirt at {uri} refused the credentials: {exc.get_error_message()}") from None
        raise HostUnreachable(f"cannot connect to libvirt at {uri}: {exc.get_error_message()}") from None


def close_connection(conn: libvirt.virConnect) -> None:
    conn.close()


def connections() -> Connections:
    """The engine's cache: one connection per host, kept until dropped (liveness is checked on use)."""
    return SessionCache(open_connection, close_connection)


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def connection(cache: Connections, host: HostSpec) -> libvirt.virConnect:
    """The host's open connection, re-opened when the kept one died (daemon restarted)."""
    conn = cache.get(host)
    if _alive(conn):
        return conn
    cache.discard(host, conn)
    return cache.get(host)
