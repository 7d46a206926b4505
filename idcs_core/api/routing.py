"""Declaring API routes: one decorator that does auth, input parsing and validation.

Each area module (``api/hosts.py``, ``api/vms.py``...) has a ``router =
Router(tag)`` and declares endpoints::

    @router.post("/api/server/create", body=HostCreate, auth=ADMIN, summary="Add a host")
    async def create_host(ctx: Ctx, body: HostCreate) -> Any: ...

The wrapper authenticates (``auth``: PUBLIC, USER or ADMIN), checks path
parameters against the safe-name rule, reads the body (JSON, form-encoded, or
query string for GET/DELETE, as the billing clients send it), validates it
with the pydantic model, and wraps the handler's return value in the
envelope. The same declarations feed the OpenAPI document (``api/openapi.py``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from idcs_core import errors
from idcs_core.api import dialects
from idcs_core.api.envelope import EnvelopeResponse, ok
from idcs_core.profiles import get_profile
from idcs_core.services.api_tokens import allowed
from idcs_core.services.auth import Principal
from idcs_core.validation import check_path_param

if TYPE_CHECKING:
    from idcs_core.config import Config
    from idcs_core.context import CoreContext

PUBLIC, USER, ADMIN = "public", "user", "admin"

_PATH_PARAM = re.compile(r"{(\w+)(?::\w+)?}")


class CoreSlot:
    """Where routes find the core: the routes are built before it starts, and the app's start-up
    (the composition root) puts it here once it has."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.core: CoreContext | None = None

    def get(self) -> CoreContext:
        if self.core is None:
            raise RuntimeError("the server is still starting")
        return self.core


@dataclass
class Ctx:
    """What a handler gets besides its body: the request, who asks, and the core's services."""

    request: Request
    principal: Principal | None
    core: CoreContext
    # ``?wait=`` seconds, validated before the handler runs (routes that document ``wait``)
    wait: float | None = None

    @functools.cached_property
    def query(self) -> dict[str, str]:
        """The query string's parameters (parsed on first use: most routes never look)."""
        return dict(self.request.query_params)

    @functools.cached_property
    def user(self) -> Principal:
        """Who asks, with the request's source address (services audit with it)."""
        assert self.principal is not None
        return self.principal.from_address(self.source_ip)

    @property
    def source_ip(self) -> str:
        return self.request.client.host if self.request.client else ""


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Callable[..., Awaitable[Any]]
    auth: str
    body: type[BaseModel] | None
    summary: str
    description: str
    tag: str
    alias_of: str | None = None
    responses: dict[int, str] = field(default_factory=dict)
    data_schema: dict[str, Any] | None = None
    query: dict[str, str] = field(default_factory=dict)
    vm_scoped: bool = False


class Router:
    """The endpoints of one API area."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.endpoints: list[Endpoint] = []

    def route(self, method: str, path: str, *, auth: str = USER, body: type[BaseModel] | None = None,
              summary: str = "", alias_of: str | None = None, data: dict[str, Any] | None = None,
              query: dict[str, str] | None = None, vm_scoped: bool = False,
              ) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        """Register ``handler`` for ``method path``.

        ``alias_of`` marks a compatibility route (documented as an alias);
        ``data`` is a JSON schema of the envelope's ``data``; ``query`` documents
        query parameters; ``vm_scoped`` lets a token limited to one VM through
        (the handler checks it is that VM).
        """

        def register(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            doc = (handler.__doc__ or "").strip()
            first, _, rest = doc.partition("\n")
            self.endpoints.append(Endpoint(method, path, handler, auth, body, summary or first.strip(),
                                           rest.strip(), self.tag, alias_of, data_schema=data,
                                           query=query or {}, vm_scoped=vm_scoped))
            return handler

        return register

    def get(self, path: str, **kw: Any) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        return self.route("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        return self.route("DELETE", path, **kw)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__") or "body"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


# Never read from a URL (it lands in access logs, proxies and browser history): 400 instead.
SECRET_FIELDS = frozenset({"password", "old_password", "new_password", "current_password", "os_pass", "vc_pass",
                           "server_pass", "token"})
WAIT_LIMIT = 3600.0


def profile_wait(principal: Principal | None) -> float:
    """How long a call waits for its task when it gives no ``?wait=``: an API token waits as long
    as its client profile allows (below the module's own time-out); everyone else 0."""
    profile = get_profile(principal.profile) if principal else None
    return profile.wait_seconds if profile else 0.0


def wait_param(query: dict[str, str], default: float) -> float:
    """``?wait=`` as seconds (0..3600); absent: ``default`` (an API token's profile wait, else 0)."""
    raw = query.get("wait")
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise errors.BadRequest("wait must be a number of seconds") from None
    if not 0 <= value <= WAIT_LIMIT:  # also refuses nan and inf
        raise errors.BadRequest(f"wait must be between 0 and {WAIT_LIMIT:g} seconds")
    return value


async def read_body(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request's input as a dict: JSON object, form fields, or (GET/DELETE) query string.

    JSON and form bodies win over the query string; query values fill fields the
    body does not give (the billing clients put GET/DELETE parameters there).
    Secrets (``SECRET_FIELDS``) are never taken from the query string: 400.
    """
    leaked = sorted(SECRET_FIELDS & set(request.query_params))
    if leaked:
        raise errors.BadRequest(f"send {', '.join(leaked)} in the request body, never in the URL")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise errors.BadRequest(f"request body too large (limit {max_bytes} bytes)")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_bytes:
            raise errors.BadRequest(f"request body too large (limit {max_bytes} bytes)")
    data: dict[str, Any] = dict(request.query_params)
    if raw.strip():
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded" and not raw.lstrip().startswith((b"{", b"[")):
            try:
                data.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=True))
            except (UnicodeDecodeError, ValueError) as exc:
                raise errors.BadRequest("the form body cannot be parsed") from exc
        else:
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise errors.BadRequest(f"the body is not valid JSON: {exc}") from exc
            if not isinstance(parsed, dict):
                raise errors.BadRequest("the body must be a JSON object")
            data.update(parsed)
    return data


def build_route(endpoint: Endpoint, slot: CoreSlot) -> Route:
    """Wrap an endpoint into a Starlette route that authenticates, validates and envelopes."""
    path_params = _PATH_PARAM.findall(endpoint.path)
    max_bytes = slot.config.max_body_bytes

    async def asgi_endpoint(request: Request) -> Response:
        core = slot.get()
        principal = None
        if endpoint.auth != PUBLIC:
            principal = await core.auth.authenticate(request.headers.get("authorization"))
            if principal.vm_id is not None and not endpoint.vm_scoped:
                raise errors.Forbidden("this token is limited to one virtual machine")
            if endpoint.auth == ADMIN and not principal.is_admin:
                raise errors.Forbidden("administrator rights are needed")
            if principal.scopes and not allowed(principal, endpoint.method, endpoint.path):
                scopes = ', '.join(principal.scopes)
                raise errors.Forbidden(f"this API token's scopes ({scopes}) do not allow this call")
        profile = principal.profile if principal else None
        kwargs: dict[str, Any] = {}
        for name in path_params:
            kwargs[name] = check_path_param(name, request.path_params[name])
        ctx = Ctx(request, principal, core)
        if "wait" in endpoint.query:  # checked before anything runs: a bad value changes nothing
            ctx.wait = wait_param(ctx.query, profile_wait(principal))
        if endpoint.body is not None:
            raw = dialects.read_request(profile, endpoint.method, endpoint.path, await read_body(request, max_bytes))
            try:
                kwargs["body"] = endpoint.body.model_validate(raw)
            except ValidationError as exc:
                raise errors.BadRequest(_validation_message(exc)) from None
        result = await endpoint.handler(ctx, **kwargs)
        if isinstance(result, Response):
            return result
        if isinstance(result, tuple):
            data, msg = result
            return ok(dialects.shape_answer(profile, endpoint.method, endpoint.path, data), msg)
        return ok(dialects.shape_answer(profile, endpoint.method, endpoint.path, result))

    asgi_endpoint.__name__ = endpoint.handler.__name__
    return Route(endpoint.path, asgi_endpoint, methods=[endpoint.method], name=None)


__all__ = ["ADMIN", "PUBLIC", "USER", "CoreSlot", "Ctx", "EnvelopeResponse", "Router", "build_route"]
