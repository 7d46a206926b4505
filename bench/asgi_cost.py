#!/usr/bin/env python3
"""CPU cost of one authenticated cheap read inside the server, without the network.

Builds the app (fresh SQLite data dir, no hosts), logs in, and calls it as an ASGI application
in a loop: what remains is our own work per request (middlewares, routing, auth, the handler,
dialect shaping, the envelope), measured as process CPU time, so a busy machine (other
processes on the cores) disturbs it far less than a wrk run. To compare with another commit,
run it with ``PYTHONPATH`` pointing at an export of that commit::

    .venv/bin/python bench/asgi_cost.py
    git archive main | tar -x -C /tmp/idcs-main
    PYTHONPATH=/tmp/idcs-main .venv/bin/python bench/asgi_cost.py
    .venv/bin/python bench/asgi_cost.py --profile /api/system/engine   # cProfile, top 25
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

PATHS = ("/api/system/engine", "/api/system/stats", "/api/users/current", "/api/server/detail")


async def call(app: Any, method: str, path: str, headers: list[tuple[str, str]],
               body: bytes = b"") -> tuple[int, bytes]:
    """One request through the ASGI app; (status, body)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.encode(), v.encode()) for k, v in headers], "client": ("127.0.0.1", 50000),
             "server": ("127.0.0.1", 80), "app": app}
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000, help="requests per path (default 4000)")
    parser.add_argument("--profile", metavar="PATH", help="profile this path with cProfile instead")
    parser.add_argument("paths", nargs="*", default=list(PATHS))
    args = parser.parse_args()
    password = secrets.token_urlsafe(16)
    os.environ["IDCS_ADMIN_PASSWORD"] = password
    from idcs_core.app import create_app
    from idcs_core.config import Config

    config = Config(data_dir=Path(tempfile.mkdtemp(prefix="idcs-asgi-cost-")), database_url=None)
    app = create_app(config)
    async with app.router.lifespan_context(app):
        status, body = await call(app, "POST", "/login", [("content-type", "application/json")],
                                  json.dumps({"username": "admin", "password": password}).encode())
        if status != 200:
            raise SystemExit(f"login failed: {status} {body[:200]!r}")
        auth = [("authorization", f"Bearer {json.loads(body)['data']['token']}")]
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.requests):
                await call(app, "GET", args.profile, auth)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            return
        for path in args.paths:
            for _ in range(300):  # warm-up: caches filled, code paths taken once
                await call(app, "GET", path, auth)
            started = time.process_time()
            for _ in range(args.requests):
                status, body = await call(app, "GET", path, auth)
            spent = time.process_time() - started
            if status != 200:
                raise SystemExit(f"{path}: {status} {body[:200]!r}")
            print(f"{path:24} {spent / args.requests * 1e6:7.1f} us CPU per request")


if __name__ == "__main__":
    asyncio.run(main())
