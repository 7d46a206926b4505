"""Route dispatch by dictionary for the API's fixed paths.

Starlette's router tries every route's regular expression in order, so a request for a path
declared late pays for all the routes before it (about 150). ``FastRouter`` answers a fixed path
(no ``{parameter}``) with one dictionary look-up, and leaves everything else to Starlette's scan.
A fixed path enters the table only if no earlier route would take the same request, so the
answer is always the one the scan would give.
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


class FastRouter(Router):
    """A Starlette router with a dictionary in front of its scan (see the module's docstring)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]  # the same arguments as Router
        self.fixed = fixed_table(self.routes)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = self.fixed.get((get_route_path(scope), scope["method"]))
            if route is not None:
                scope.setdefault("router", self)
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                scope["path_params"] = dict(scope.get("path_params", {}))
                await route.handle(scope, receive, send)
                return
        await super().app(scope, receive, send)
