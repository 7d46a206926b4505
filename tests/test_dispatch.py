"""Fixed paths are dispatched by dictionary: every request reaches the route Starlette's scan would pick."""

from __future__ import annotations

import re

from starlette.routing import Match, Route

from idcs_core.api.dispatch import FastRouter, fixed_table
from idcs_core.app import create_app


def _scan(routes: list, path: str, method: str) -> object | None:
    probe = {"type": "http", "path": path, "root_path": "", "method": method}
    return next((r for r in routes if r.matches(probe)[0] is Match.FULL), None)


def test_every_fixed_path_goes_where_the_scan_goes() -> None:
    app = create_app()
    router = app.router
    assert isinstance(router, FastRouter)
    assert len(router.fixed) > 50  # the API's fixed paths are in the table
    for (path, method), route in router.fixed.items():
        assert _scan(router.routes, path, method) is route, (method, path)
    # and every fixed (path, method) the scan answers is either in the table or shadowed by an earlier route
    for route in router.routes:
        if isinstance(route, Route) and not route.param_convertors:
            for method in route.methods or ():
                picked = _scan(router.routes, route.path, method)
                assert router.fixed.get((route.path, method), picked) is picked


def test_a_fixed_path_shadowed_by_an_earlier_pattern_is_left_to_the_scan() -> None:
    async def endpoint(_request: object) -> None: ...

    routes = [Route("/api/users/{user_id}", endpoint, methods=["GET"]),
              Route("/api/users/current", endpoint, methods=["GET", "POST"])]
    table = fixed_table(routes)
    assert ("/api/users/current", "GET") not in table  # the pattern before it takes GET
    assert table[("/api/users/current", "POST")] is routes[1]
    assert not any(re.search(r"{", path) for path, _ in table)
