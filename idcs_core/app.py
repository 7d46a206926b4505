"""The Starlette application: every route of every API area, mounted in one place."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import AsyncIterator
from importlib import metadata
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from idcs_core.api import (
    auth,
    backups,
    compat,
    console,
    hosts,
    network,
    openapi,
    operations,
    panel,
    storage,
    system,
    tasks,
    tokens,
    users,
    vms,
)
from idcs_core.api.dispatch import FastRouter
from idcs_core.api.envelope import EXCEPTION_HANDLERS
from idcs_core.api.headers import SecurityHeaders
from idcs_core.api.routing import CoreSlot, Endpoint, build_route
from idcs_core.config import Config
from idcs_core.context import CoreContext
from idcs_core.logsafe import install_access_log_filter
from idcs_core.ops.metrics import MetricsMiddleware
from idcs_core.plugins import PluginRegistry
from idcs_core.services import host_options

WORKER_ENV = "IDCS_WORKER"  # "host:port:log level" of ``idcs serve --workers N`` for its processes
# "1": ``idcs serve --workers N --no-worker``: no process of it runs queued jobs
NO_WORKER_ENV = "IDCS_SERVE_NO_WORKER"

# The API, area by area (the order only matters for documentation).
ROUTERS = [auth.router, system.router, hosts.router, vms.router, network.router, storage.router,
           backups.router, tasks.router, users.router, compat.router, tokens.router, operations.router]


def endpoints() -> list[Endpoint]:
    return [ep for router in ROUTERS for ep in router.endpoints]


def version() -> str:
    try:
        return metadata.version("idcs-core")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def create_app(config: Config | None = None, plugins: PluginRegistry | None = None) -> Starlette:
    config = config or Config()
    slot = CoreSlot(config)  # filled by the lifespan below: the one place the core is built
    doc = openapi.build(endpoints(), version())
    page = openapi.render_page(doc)

    served: dict[str, Any] = {}

    async def openapi_json(_request: Request) -> Response:
        """The document, with each installed engine's host options once the core has loaded them."""
        core = slot.core
        if core is None:
            return JSONResponse(doc)
        if "doc" not in served:
            served["doc"] = openapi.with_engines(doc, {
                name: host_options.json_schema(core.engine_options(name)) for name in core.plugins.engines})
        return JSONResponse(served["doc"])

    async def docs(_request: Request) -> Response:
        return HTMLResponse(page)

    routes: list[BaseRoute] = [build_route(ep, slot) for ep in endpoints()]
    routes += [Route("/openapi.json", openapi_json, methods=["GET"]), Route("/docs", docs, methods=["GET"])]
    routes += console.routes
    routes += panel.routes

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        core = await CoreContext.start(config, plugins)
        slot.core = core
        app.state.core = core
        # what start-up built (modules, routes, schemas: ~120k objects) lives as long as the server:
        # out of the collector's sight, a full collection no longer walks it (a tail stall of tens of ms)
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await core.stop()

    install_access_log_filter()  # token= values never reach the access log
    app = Starlette(exception_handlers=EXCEPTION_HANDLERS, middleware=[Middleware(MetricsMiddleware),
                                                                       Middleware(SecurityHeaders)])
    app.router = FastRouter(routes, lifespan=lifespan)  # fixed paths by dictionary, the rest by scan
    return app


def create_worker_app() -> Starlette:
    """The application of one process of ``idcs serve --workers N`` (a uvicorn factory): its
    configuration comes from the environment the command set (``WORKER_ENV``, ``IDCS_*``)."""
    import logging

    from idcs_core.logsafe import SafeFormatter

    host, port, level = os.environ[WORKER_ENV].rsplit(":", 2)
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter(f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    config = Config()
    config.host, config.port = host, int(port)
    config.run_worker = os.environ.get(NO_WORKER_ENV) != "1"
    if config.node_name:  # ``--name``: one name per process in the nodes registry
        config.node_name = f"{config.node_name}-{os.getpid()}"
    return create_app(config)
