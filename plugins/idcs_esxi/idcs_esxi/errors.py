"""vSphere faults and connection failures -> OpenIDCS business errors, in one place.

Messages say what failed and why, in the user's words; they never carry a password
or a session cookie.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
from collections.abc import Iterator

from pyVmomi import vim, vmodl

from idcs_core import errors

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


@contextlib.contextmanager
def backend_errors(what: str) -> Iterator[None]:
    """Translate what a vSphere call raises into the matching business error."""
    try:
        yield
    except errors.IDCSError:
        raise
    except vim.fault.InvalidLogin as exc:
        raise errors.HostUnreachable(f"{what}: the host refused the login") from exc
    except vim.fault.NotAuthenticated as exc:
        raise errors.HostUnreachable(f"{what}: the session expired") from exc
    except vim.fault.DuplicateName as exc:
        raise errors.Conflict(f"{what}: the name is taken on the host") from exc
    except vim.fault.FileAlreadyExists as exc:
        raise errors.Conflict(f"{what}: a file of that name already exists ({fault_text(exc)})") from exc
    except vim.fault.InsufficientResourcesFault as exc:
        raise errors.VMOperationFailed(f"{what}: not enough resources on the host ({fault_text(exc)})") from exc
    except vim.fault.InvalidPowerState as exc:
        raise errors.VMOperationFailed(
            f"{what}: not possible while the VM is {exc.existingState} ({fault_text(exc)})") from exc
    except vim.fault.ToolsUnavailable as exc:
        raise errors.VMOperationFailed(f"{what}: VMware Tools are not running in the guest") from exc
    except (vim.fault.NotFound, vim.fault.FileNotFound) as exc:
        raise errors.BadRequest(f"{what}: {fault_text(exc)}") from exc
    except vmodl.fault.ManagedObjectNotFound as exc:
        raise errors.VMNotFound(f"{what}: the object is gone from the host") from exc
    except (vmodl.fault.NotSupported, vmodl.fault.MethodNotFound) as exc:
        raise errors.NotSupported(f"{what}: the host does not support it ({fault_text(exc)})") from exc
    except (vmodl.fault.InvalidArgument, vim.fault.InvalidDeviceSpec) as exc:
        raise errors.BadRequest(f"{what}: {fault_text(exc)}") from exc
    except vmodl.MethodFault as exc:
        raise errors.VMOperationFailed(f"{what}: {fault_text(exc)}") from exc
    except _UNREACHABLE as exc:
        raise errors.HostUnreachable(f"{what}: {fault_text(exc)}") from exc
