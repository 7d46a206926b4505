"""The response envelope ``{"code", "msg", "data", "timestamp"}`` and the one error handler.

Every answer of ``/api/...``, success or failure, is this JSON object. ``code``
is the HTTP code or a business code (``idcs_core.errors``); ``timestamp`` is
integer epoch seconds (clients decode it strictly).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from idcs_core import errors

log = logging.getLogger("idcs.api")


def _default(obj: Any) -> Any:
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class EnvelopeResponse(Response):
    media_type = "application/json"

    def __init__(self, data: Any = None, *, code: int = 200, msg: str = "success", status: int = 200) -> None:
        body = orjson.dumps({"code": code, "msg": msg, "data": data, "timestamp": int(time.time())},
                            default=_default, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z)
        super().__init__(body, status_code=status)


def ok(data: Any = None, msg: str = "success") -> EnvelopeResponse:
    return EnvelopeResponse(data, msg=msg)


def error_response(exc: errors.IDCSError) -> EnvelopeResponse:
    return EnvelopeResponse(exc.data, code=exc.code, msg=exc.msg, status=exc.http_status)


async def handle_idcs_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.IDCSError)
    return error_response(exc)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers for this path (each route has one method)."""
    methods: set[str] = set()
    for route in getattr(request.app, "routes", []):
        match, _ = route.matches({**request.scope, "method": "\0"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    msg = {404: "no such route", 405: "method not allowed"}.get(status, str(exc.detail))
    # the envelope's code is the HTTP status, as the contract has it (405 for a wrong method)
    response = EnvelopeResponse(None, code=status if status < 500 else 500, msg=msg, status=status)
    if status == 405:
        response.headers["Allow"] = ", ".join(allowed_methods(request))
    return response


async def handle_stale_row(_request: Request, _exc: Exception) -> Response:
    """A row changed or vanished under a parallel request (an update racing a delete): 409."""
    return EnvelopeResponse(None, code=409, msg="the record was changed or deleted by another request; "
                            "read it again", status=409)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return EnvelopeResponse(None, code=500, msg="internal server error", status=500)


EXCEPTION_HANDLERS = {
    errors.IDCSError: handle_idcs_error,
    StaleDataError: handle_stale_row,
    HTTPException: handle_http_error,
    Exception: handle_unexpected,
}
