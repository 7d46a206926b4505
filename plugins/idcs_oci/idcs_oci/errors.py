"""Docker SDK errors to OpenIDCS business errors, in one place.

Every hook runs its SDK calls inside ``translate(action)``; the message keeps
Docker's own explanation so an operator sees what the daemon said.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import docker.errors
import requests.exceptions

from idcs_core import errors
from idcs_core.enginekit import translated

_PORT_TAKEN = ("port is already allocated", "address already in use", "bind: address")
_NAME_TAKEN = ("is already in use by container", "already exists")


def explain(exc: BaseException) -> str:
    """Docker's explanation of an API error, else the exception text."""
    if isinstance(exc, docker.errors.APIError):
        text = exc.explanation
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        return str(text or exc).strip()
    return str(exc).strip() or type(exc).__name__


def root_cause(exc: BaseException) -> BaseException:
    """The innermost error under SDK, requests and urllib3 wrappers (e.g. ConnectionRefusedError)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        reason = getattr(exc, "reason", None)
        inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        nxt = next((e for e in (reason, inner, exc.__cause__, exc.__context__)
                    if isinstance(e, BaseException)), None)
        if nxt is None:
            break
        exc = nxt
    return exc


def map_error(exc: BaseException, action: str) -> errors.IDCSError:
    """The business error for ``exc`` raised while doing ``action`` (e.g. "start container vm1")."""
    if isinstance(exc, errors.IDCSError):
        return exc
    msg = f"{action}: {explain(exc)}"
    if isinstance(exc, requests.exceptions.Timeout):
        return errors.HostUnreachable(f"{action}: the Docker host did not answer in time ({exc})")
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError):
        return errors.HostUnreachable(f"{action}: cannot reach the Docker host ({exc})")
    if isinstance(exc, docker.errors.ImageNotFound):
        return errors.BadRequest(msg)
    if isinstance(exc, docker.errors.NotFound):
        if "no such container" in msg.lower():
            return errors.VMNotFound(msg)
        return errors.NotFound(msg)
    if isinstance(exc, docker.errors.APIError):
        lowered = msg.lower()
        if any(p in lowered for p in _PORT_TAKEN):
            return errors.Conflict(msg)
        if exc.status_code == 409 and any(p in lowered for p in _NAME_TAKEN):
            return errors.Conflict(msg)
        if exc.status_code == 400:
            return errors.BadRequest(msg)
        return errors.VMOperationFailed(msg)
    if isinstance(exc, docker.errors.InvalidArgument | ValueError):
        return errors.BadRequest(msg)
    if isinstance(exc, docker.errors.DockerException | OSError):
        # SDK-level failures (TLS files, ssh transport, API version negotiation) mean the
        # host cannot be used at all.
        return errors.HostUnreachable(msg)
    return errors.VMOperationFailed(msg)


def translate(action: str) -> AbstractContextManager[None]:
    """Run SDK calls; re-raise whatever they raise as the matching business error (the toolkit's
    ``translated`` with ``map_error`` for every exception)."""
    return translated(action, {Exception: map_error})
