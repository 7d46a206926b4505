"""One libvirt connection per host, kept open and re-opened when it drops."""

from __future__ import annotations

import threading
from typing import Any

import libvirt

from idcs_core.errors import HostUnreachable
from idcs_core.types import HostSpec

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised, not printed


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


class ConnectionCache:
    """libvirt connections keyed by host; ``get`` re-opens one that is no longer alive."""

    def __init__(self) -> None:
        self._conns: dict[HostSpec, libvirt.virConnect] = {}
        self._lock = threading.Lock()

    def get(self, host: HostSpec) -> libvirt.virConnect:
        """The host's open connection (opened now if needed). Raises ``HostUnreachable``."""
        with self._lock:
            conn = self._conns.get(host)
            if conn is not None:
                try:
                    if conn.isAlive():
                        return conn
                except libvirt.libvirtError:
                    pass
                self._close(conn)
                del self._conns[host]
            conn = self._open(host)
            self._conns[host] = conn
            return conn

    def open_new(self, host: HostSpec) -> libvirt.virConnect:
        """A connection of its own for the caller to close (long-lived streams)."""
        return self._open(host)

    @staticmethod
    def _open(host: HostSpec) -> libvirt.virConnect:
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

    def drop(self, host: HostSpec) -> None:
        """Close and forget the host's connection (new address or credentials, host deleted)."""
        with self._lock:
            conn = self._conns.pop(host, None)
        if conn is not None:
            self._close(conn)

    def drop_if(self, host: HostSpec, conn: libvirt.virConnect) -> None:
        """Forget ``conn`` if it is still the host's (it failed mid-call)."""
        with self._lock:
            if self._conns.get(host) is conn:
                del self._conns[host]
        self._close(conn)

    def close_all(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            self._close(conn)

    @staticmethod
    def _close(conn: libvirt.virConnect) -> None:
        try:
            conn.close()
        except libvirt.libvirtError:
            pass
