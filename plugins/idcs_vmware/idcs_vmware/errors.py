"""vmrest's faults -> OpenIDCS business errors, with clear messages and never a credential."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import httpx

from idcs_core import errors
from idcs_core.enginekit import translated as kit_translated


class VmrestError(Exception):
    """vmrest answered an HTTP error; ``code``/``message`` come from its ErrorModel body."""

    def __init__(self, status: int, code: int | None, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.code, self.message = status, code, message


def from_response(response: httpx.Response) -> VmrestError:
    """Read vmrest's error body (``{"Code": .., "Message": ..}``; lower-case keys accepted too)."""
    code: int | None = None
    message = response.reason_phrase or "error"
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        raw_code = body.get("Code", body.get("code"))
        code = raw_code if isinstance(raw_code, int) else None
        message = str(body.get("Message", body.get("message", message)))
    return VmrestError(response.status_code, code, message)


def from_transport(exc: httpx.HTTPError, addr: str) -> errors.HostUnreachable:
    """A connection, TLS or timeout failure: the host is unreachable (1003)."""
    if isinstance(exc, httpx.TimeoutException):
        return errors.HostUnreachable(f"vmrest at {addr} did not answer in time ({type(exc).__name__})")
    return errors.HostUnreachable(f"cannot reach vmrest at {addr}: {type(exc).__name__}: {exc}")


def business(exc: VmrestError, what: str) -> errors.IDCSError:
    """The business error for a vmrest error answer to ``what``."""
    text = f"{what}: vmrest answered {exc.status}: {exc.message}"
    if exc.status in (401, 403):
        return errors.HostUnreachable(f"{what}: vmrest refused the credentials ({exc.status} {exc.message})")
    if exc.status == 404:
        return errors.VMNotFound(text)
    if exc.status == 400:
        return errors.BadRequest(text)
    return errors.VMOperationFailed(text)


def translated(what: str) -> AbstractContextManager[None]:
    """Any ``VmrestError`` escaping the block becomes its business error (the engine's last net);
    other exceptions pass unchanged (the toolkit's ``translated`` with this engine's mapping)."""
    return kit_translated(what, {VmrestError: _answered}, default=None)


def _answered(exc: BaseException, what: str) -> errors.IDCSError:
    assert isinstance(exc, VmrestError)  # the only type mapped to it
    return business(exc, what)
