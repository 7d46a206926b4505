"""Domain errors: one hierarchy, each carrying its business code and HTTP status.

Engines raise these (or let SDK errors through, which the core maps to
``EngineError``); one exception handler in ``api/envelope.py`` turns any of them
into the response envelope ``{"code": ..., "msg": ..., "data": ...}``.

Codes 200/400/401/403/404/500 and 1001-3002 are the contract of ``API.md``.
Codes 1006, 2004, 4001 and 4002 are OpenIDCS additions, documented in the
OpenAPI document (clients that only test ``code == 200`` are unaffected).
"""

from __future__ import annotations

from typing import Any


class IDCSError(Exception):
    """Base of every error that reaches an API client as an envelope."""

    code: int = 500
    http_status: int = 500
    default_msg: str = "internal server error"

    def __init__(self, msg: str | None = None, *, data: Any = None) -> None:
        self.msg = msg or self.default_msg
        self.data = data
        super().__init__(self.msg)


class BadRequest(IDCSError):
    code, http_status, default_msg = 400, 400, "bad request parameters"


class Unauthorized(IDCSError):
    code, http_status, default_msg = 401, 401, "not authenticated"


class Forbidden(IDCSError):
    code, http_status, default_msg = 403, 403, "not permitted"


class NotFound(IDCSError):
    code, http_status, default_msg = 404, 404, "resource does not exist"


class Conflict(IDCSError):
    """A resource that must be unique is taken (a host name, a NAT port, a domain)."""

    code, http_status, default_msg = 4002, 409, "resource conflict"


class QuotaExceeded(IDCSError):
    code, http_status, default_msg = 4001, 403, "quota exceeded"


class HostNotFound(IDCSError):
    code, http_status, default_msg = 1001, 404, "host does not exist"


class VMNotFound(IDCSError):
    code, http_status, default_msg = 1002, 404, "virtual machine does not exist"


class HostUnreachable(IDCSError):
    """The engine could not reach or log in to the host (daemon down, bad credentials, timeout)."""

    code, http_status, default_msg = 1003, 503, "connection to the host failed"


class HookTimeout(HostUnreachable):
    """A hook did not answer in time. A synchronous hook goes on in its worker thread:
    ``pending`` is its future, so the core can still see how it ends (and undo it)."""

    def __init__(self, msg: str | None = None, *, pending: Any = None) -> None:
        super().__init__(msg)
        self.pending = pending


class VMCreateFailed(IDCSError):
    code, http_status, default_msg = 1004, 500, "virtual machine creation failed"


class VMOperationFailed(IDCSError):
    code, http_status, default_msg = 1005, 500, "virtual machine operation failed"


class NotSupported(IDCSError):
    """The host's engine does not implement the requested operation."""

    code, http_status, default_msg = 1006, 501, "not supported by this engine"


class UserExists(IDCSError):
    code, http_status, default_msg = 2001, 409, "user name already exists"


class UserNotFound(IDCSError):
    code, http_status, default_msg = 2002, 404, "user does not exist"


class WrongPassword(IDCSError):
    code, http_status, default_msg = 2003, 401, "wrong password"


class AccountLocked(IDCSError):
    code, http_status, default_msg = 2004, 429, "too many failed logins, try again later"


class TokenInvalid(IDCSError):
    code, http_status, default_msg = 3001, 401, "token invalid"


class TokenExpired(IDCSError):
    code, http_status, default_msg = 3002, 401, "token expired"


# Engines may raise this for "the operation failed on the back end"; the service
# layer re-raises it as 1004 (create) or 1005 (everything else).
EngineError = VMOperationFailed

BUSINESS_CODES: dict[int, tuple[int, str]] = {
    cls.code: (cls.http_status, cls.default_msg)
    for cls in (
        BadRequest, Unauthorized, Forbidden, NotFound, Conflict, QuotaExceeded, HostNotFound,
        VMNotFound, HostUnreachable, VMCreateFailed, VMOperationFailed, NotSupported, UserExists,
        UserNotFound, WrongPassword, AccountLocked, TokenInvalid, TokenExpired,
    )
}
