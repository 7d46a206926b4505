"""Fixed paths are dispatched by dictionary: every request reaches the route Starlette's scan would pick."""

from __future__ import annotations

import re

from starlette.routing import Match, Route

from idcs_core.api.dispatch import FastRouter, fixed_table, literal_prefix, prefix_table
from idcs_core.app import create_app
from idcs_core.testing.server import ApiClient


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


def _first_full(routes: list, path: str, method: str) -> object | None:
    probe = {"type": "http", "path": path, "root_path": "", "method": method}
    return next((r for r in routes if r.matches(probe)[0] is Match.FULL), None)


def _sample_paths(route: Route) -> list[str]:
    """``route``'s pattern with every parameter filled in, plus near misses around it."""
    filled = re.sub(r"{[^}]+}", "x1", route.path)
    return [filled, filled + "/", filled + "/extra", filled.replace("x1", "a/b"), filled.upper()]


def test_a_path_with_parameters_goes_where_the_scan_goes() -> None:
    """Every parameterised route, filled in, near misses too, and every method: the routes tried
    by prefix find the same first full match as Starlette's scan of all routes."""
    router = create_app().router
    assert isinstance(router, FastRouter)
    assert len(router.by_prefix) > 10
    tried = 0
    for route in router.routes:
        if not isinstance(route, Route) or not route.param_convertors:
            continue
        for path in _sample_paths(route):
            key = literal_prefix(path)
            for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
                scanned = _first_full(router.routes, path, method)
                if key is None:
                    continue  # left to the scan
                if key in router.by_prefix:
                    assert _first_full(router.by_prefix[key], path, method) is scanned, (method, path)
                    tried += 1
    assert tried > 500


def test_an_earlier_pattern_without_a_literal_prefix_still_wins() -> None:
    async def endpoint(_request: object) -> None: ...

    routes = [Route("/api/{kind}/detail/{name}", endpoint, methods=["GET"]),
              Route("/api/client/detail/{hs_name}", endpoint, methods=["GET"]),
              Route("/api/client/detail/fixed", endpoint, methods=["GET"]),
              Route("/api/users/{user_id}", endpoint, methods=["GET"]),
              Route("/api/client/other/{hs_name}", endpoint, methods=["GET"]),
              Route("/api/client/short", endpoint, methods=["GET"])]
    table = prefix_table(routes)
    assert table[("api", "client", "detail")] == routes[:3]  # not /api/users/..., nor the other prefix
    assert table[("api", "client", "other")] == [routes[0], routes[4]]
    assert literal_prefix("/api/client/detail") is None  # nothing follows the three segments
    assert literal_prefix("/api/client/detail/x") == ("api", "client", "detail")


def test_the_app_answers_parameterised_paths_as_before(admin: ApiClient, host: str) -> None:
    """Over a live server: a listed host, an unknown host, a wrong method and no route at all keep
    their answers."""
    assert isinstance(admin.get(f"/api/client/detail/{host}"), list)
    status, body = admin.call("GET", "/api/client/detail/no-such-host")
    assert (status, body["code"]) == (404, 1001), body
    assert admin.http.delete(f"/api/client/detail/{host}",
                             headers={"Authorization": f"Bearer {admin.token}"}).status_code == 405
    assert admin.http.get("/api/client/nothing-here/x/y",
                          headers={"Authorization": f"Bearer {admin.token}"}).status_code == 404
