"""Route dispatch by dictionary for the API's fixed paths, and by prefix for the others.

Starlette's router tries every route's regular expression in order, so a request for a path
declared late pays for all the routes before it (about 150). ``FastRouter`` answers a fixed path
(no ``{parameter}``) with one dictionary look-up. A fixed path enters the table only if no
earlier route would take the same request, so the answer is always the one the scan would give.

A path with parameters is looked up by its first ``PREFIX_SEGMENTS`` segments
(``/api/client/detail/{hs_name}`` under ``("api", "client", "detail")``): only the routes whose
pattern's literal start agrees with those segments, plus mounts and websocket routes, can match
it, so the first full match among them, in declaration order, is the scan's. When none matches
fully (405, 404, a redirect for a trailing slash, a prefix no pattern declares) Starlette's
scan decides.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import Receive, Scope, Send


def fixed_table(routes: Sequence[BaseRoute]) -> dict[tuple[str, str], Route]:
    """(path, method) -> the route the in-order scan would pick, for routes without parameters."""
    table: dict[tuple[str, str], Route] = {}
    for index, route in enumerate(routes):
        if not isinstance(route, Route) or route.param_convertors or not route.methods:
            continue
        for method in route.methods:
            probe: Scope = {"type": "http", "path": route.path, "root_path": "", "method": method}
            if any(earlier.matches(probe)[0] is Match.FULL for earlier in routes[:index]):
                continue
            table.setdefault((route.path, method), route)
    return table


PREFIX_SEGMENTS = 3


def literal_prefix(path: str) -> tuple[str, ...] | None:
    """The first ``PREFIX_SEGMENTS`` segments of a route pattern or request path, when they are
    all literal and something follows them; None otherwise."""
    parts = path.split("/", PREFIX_SEGMENTS + 1)
    if len(parts) <= PREFIX_SEGMENTS + 1 or parts[0] != "":
        return None
    head = tuple(parts[1:PREFIX_SEGMENTS + 1])
    return None if any("{" in part for part in head) else head


def literal_lead(route: BaseRoute) -> tuple[str, ...] | None:
    """The literal segments (at most ``PREFIX_SEGMENTS``) every path ``route`` matches starts with,
    each followed by ``/``; None for anything but a plain ``Route`` (mounts, websockets): no claim."""
    if not isinstance(route, Route):
        return None
    lead: list[str] = []
    for part in route.path.split("/")[1:-1][:PREFIX_SEGMENTS]:
        if "{" in part:
            break
        lead.append(part)
    return tuple(lead)


def prefix_table(routes: Sequence[BaseRoute]) -> dict[tuple[str, ...], list[BaseRoute]]:
    """Literal prefix (of the routes with parameters) -> the routes, in declaration order, that
    may fully match a path with that prefix: every route whose literal lead is a prefix of it,
    and every route that makes no claim (``literal_lead`` None). A route without parameters
    matches its own path only, so it is among them only under its own path's prefix."""
    keys = {literal_prefix(r.path) for r in routes if isinstance(r, Route) and r.param_convertors}
    table: dict[tuple[str, ...], list[BaseRoute]] = {}
    for key in keys - {None}:
        assert key is not None
        table[key] = [r for r in routes if _may_match(r, key)]
    return table


def _may_match(route: BaseRoute, key: tuple[str, ...]) -> bool:
    lead = literal_lead(route)
    if lead is None:
        return True
    if isinstance(route, Route) and not route.param_convertors:
        return literal_prefix(route.path) == key
    return key[:len(lead)] == lead


class FastRouter(Router):
    """A Starlette router with a dictionary in front of its scan (see the module's docstring)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]  # the same arguments as Router
        self.fixed = fixed_table(self.routes)
        self.by_prefix = prefix_table(self.routes)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = get_route_path(scope)
            route = self.fixed.get((path, scope["method"]))
            if route is not None:
                scope.setdefault("router", self)
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                scope["path_params"] = dict(scope.get("path_params", {}))
                await route.handle(scope, receive, send)
                return
            key = literal_prefix(path)
            for candidate in self.by_prefix.get(key, ()) if key is not None else ():
                match, child_scope = candidate.matches(scope)
                if match is Match.FULL:  # the scan's first full match: Starlette's own steps
                    scope.setdefault("router", self)
                    scope["route"] = candidate
                    scope.update(child_scope)
                    await candidate.handle(scope, receive, send)
                    return
        await super().app(scope, receive, send)
