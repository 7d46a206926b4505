"""libvirt faults -> OpenIDCS business errors with clear messages.

Every hook runs its libvirt calls inside ``translated(cache, host, what)`` (the toolkit's
``idcs_core.enginekit.translated`` with this engine's mapping): a lost connection is forgotten,
so the next call re-opens it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import libvirt

from idcs_core import errors
from idcs_core.enginekit import translated as kit_translated
from idcs_core.types import HostSpec
from idcs_libvirt.client import Connections, connection

# codes that mean the connection itself is gone (daemon killed, network cut)
_CONNECTION_LOST = {
    libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_AUTH_FAILED,
}
_NOT_FOUND = {libvirt.VIR_ERR_NO_DOMAIN}
_BAD_INPUT = {libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
              libvirt.VIR_ERR_NO_STORAGE_VOL}


def translate(exc: BaseException, what: str) -> errors.IDCSError:
    """The business error for a libvirt fault during ``what``."""
    assert isinstance(exc, libvirt.libvirtError)
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    if code in _CONNECTION_LOST:
        return errors.HostUnreachable(f"{what}: libvirt connection lost: {message}")
    if code in _NOT_FOUND:
        return errors.VMNotFound(f"{what}: {message}")
    if code == libvirt.VIR_ERR_OPERATION_TIMEOUT:
        return errors.VMOperationFailed(f"{what}: libvirt timed out: {message}")
    if code in (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, libvirt.VIR_ERR_AGENT_UNSYNCED):
        return errors.NotSupported(f"{what}: the guest has no QEMU guest agent answering (install and start "
                                   "qemu-guest-agent in the guest): {message}")
    if code in _BAD_INPUT:
        return errors.BadRequest(f"{what}: {message}")
    return errors.VMOperationFailed(f"{what}: {message}")


@contextlib.contextmanager
def translated(cache: Connections, host: HostSpec, what: str) -> Iterator[libvirt.virConnect]:
    """Yield the host's connection; turn libvirt faults into business errors, and forget a
    connection that died so the next call re-opens it. Other exceptions pass unchanged."""
    conn = connection(cache, host)
    with kit_translated(what, {libvirt.libvirtError: translate}, default=None,
                        on_unreachable=lambda: cache.discard(host, conn)):
        yield conn
