"""vSphere faults and connection failures -> OpenIDCS business errors, in one place.

Messages say what failed and why, in the user's words; they never carry a password
or a session cookie.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Callable
from contextlib import AbstractContextManager

from pyVmomi import vim, vmodl

from idcs_core import errors
from idcs_core.enginekit import ErrorFactory, translated

_UNREACHABLE = (ConnectionError, socket.timeout, TimeoutError, http.client.HTTPException, OSError)


def fault_text(exc: BaseException) -> str:
    """The readable part of a vSphere fault (its ``msg``), else the exception's text."""
    msg = getattr(exc, "msg", None)
    if isinstance(msg, str) and msg:
        return msg
    return str(exc) or type(exc).__name__


def connection_error(addr: str, exc: BaseException) -> errors.HostUnreachable:
    """The error for a host that cannot be reached or refuses the login."""
    if isinstance(exc, vim.fault.InvalidLogin):
        return errors.HostUnreachable(f"login to {addr} failed: wrong user name or password")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return errors.HostUnreachable(
            f"{addr}: the TLS certificate is not trusted ({exc.verify_message}); "
            "set the host option verify_tls to false to accept a self-signed certificate")
    if isinstance(exc, ssl.SSLError):
        return errors.HostUnreachable(f"{addr}: TLS failed: {exc.reason or exc}")
    if isinstance(exc, ConnectionRefusedError):
        return errors.HostUnreachable(f"{addr}: connection refused")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return errors.HostUnreachable(f"{addr}: no answer (timed out)")
    return errors.HostUnreachable(f"{addr}: {fault_text(exc)}")


def _fault(kind: type[errors.IDCSError], say: Callable[[BaseException], str]) -> ErrorFactory:
    """A factory for ``translated``: ``kind("<what>: <what say tells of the fault>")``."""
    return lambda exc, what: kind(f"{what}: {say(exc)}")


# Searched in order: the specific vSphere faults first, then any fault, then transport failures.
_FAULTS: dict[type[BaseException] | tuple[type[BaseException], ...], ErrorFactory] = {
    vim.fault.InvalidLogin: _fault(errors.HostUnreachable, lambda e: "the host refused the login"),
    vim.fault.NotAuthenticated: _fault(errors.HostUnreachable, lambda e: "the session expired"),
    vim.fault.DuplicateName: _fault(errors.Conflict, lambda e: "the name is taken on the host"),
    vim.fault.FileAlreadyExists: _fault(errors.Conflict,
                                        lambda e: f"a file of that name already exists ({fault_text(e)})"),
    vim.fault.InsufficientResourcesFault: _fault(errors.VMOperationFailed,
                                                 lambda e: f"not enough resources on the host ({fault_text(e)})"),
    vim.fault.InvalidPowerState: _fault(
        errors.VMOperationFailed,
        lambda e: f"not possible while the VM is {getattr(e, 'existingState', None)} ({fault_text(e)})"),
    vim.fault.ToolsUnavailable: _fault(errors.VMOperationFailed, lambda e: "VMware Tools are not running in the guest"),
    (vim.fault.NotFound, vim.fault.FileNotFound): _fault(errors.BadRequest, fault_text),
    vmodl.fault.ManagedObjectNotFound: _fault(errors.VMNotFound, lambda e: "the object is gone from the host"),
    (vmodl.fault.NotSupported, vmodl.fault.MethodNotFound): _fault(
        errors.NotSupported, lambda e: f"the host does not support it ({fault_text(e)})"),
    (vmodl.fault.InvalidArgument, vim.fault.InvalidDeviceSpec): _fault(errors.BadRequest, fault_text),
    vmodl.MethodFault: _fault(errors.VMOperationFailed, fault_text),
    _UNREACHABLE: _fault(errors.HostUnreachable, fault_text),
}


def backend_errors(what: str) -> AbstractContextManager[None]:
    """Translate what a vSphere call raises into the matching business error (the toolkit's
    ``translated`` with this engine's mapping); anything else passes unchanged."""
    return translated(what, _FAULTS, default=None)
