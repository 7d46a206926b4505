"""The ``idcs`` command: serve, manage users, list plugins, upgrade the database."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from idcs_core.config import Config


def _config(args: argparse.Namespace) -> Config:
    kwargs: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        kwargs["data_dir"] = Path(args.data_dir)
    if getattr(args, "database_url", None):
        kwargs["database_url"] = args.database_url
    return Config(**kwargs)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from idcs_core.app import create_app
    from idcs_core.logsafe import SafeFormatter

    config = _config(args)
    config.host, config.port = args.host, args.port
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    ssl: dict[str, Any] = {}
    if args.self_signed and not (args.tls_cert and args.tls_key):
        from idcs_core.tls import ensure_self_signed

        cert, key = ensure_self_signed(config.data_dir, args.host)
        args.tls_cert, args.tls_key = str(cert), str(key)
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            print("idcs serve: --tls-cert and --tls-key go together", file=sys.stderr)
            return 2
        ssl = {"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key}
    config.run_worker = not args.no_worker
    if args.concurrency:
        config.worker_concurrency = args.concurrency
    if args.name:
        config.node_name = args.name
    proxies = [a.strip() for a in (args.trusted_proxy or []) for a in a.split(",") if a.strip()]
    # X-Forwarded-For / -Proto are believed only from these peers (a load balancer): the client's
    # own address then counts for login locks, the audit log and metrics_allow; from anyone else
    # the headers are ignored, so nobody can pick the address they are counted under
    run: dict[str, Any] = dict(host=args.host, port=args.port, log_level=args.log_level,
                               access_log=args.access_log, proxy_headers=bool(proxies), **ssl)
    if proxies:
        run["forwarded_allow_ips"] = proxies
    if args.workers > 1:
        return _serve_workers(args, config, run)
    app = create_app(config)
    print(f"OpenIDCS listening on {'https' if ssl else 'http'}://{args.host}:{args.port} "
          f"(data: {config.data_dir})", flush=True)
    uvicorn.run(app, **run)
    return 0


def _serve_workers(args: argparse.Namespace, config: Config, run: dict[str, Any]) -> int:
    """``idcs serve --workers N``: N uvicorn processes sharing the port, on PostgreSQL only.

    The schema upgrade and the first administrator are done here, once, before any worker
    starts; of the workers one claims the rest of the start-up work (``context.start_up_lead``).
    """
    import uuid

    import uvicorn

    from idcs_core.app import NO_WORKER_ENV, WORKER_ENV
    from idcs_core.context import SERVE_BOOT_ENV
    from idcs_core.db.session import upgrade

    if config.db_url.startswith("sqlite"):
        print("idcs serve: --workers needs PostgreSQL (--database-url postgresql://...): on SQLite the login "
              "counters and console tickets live in one process's memory and other processes' commits are not "
              "heard; run one process per SQLite database", file=sys.stderr)
        return 2
    upgrade(config.db_url)

    async def first_admin() -> None:
        from idcs_core.context import CoreContext
        from idcs_core.plugins import PluginRegistry
        from idcs_core.services.users import ensure_first_admin

        config.create_admin = False
        core = await CoreContext.start(config, PluginRegistry(), serve=False)
        try:
            await ensure_first_admin(core)
        finally:
            await core.stop()

    asyncio.run(first_admin())
    # the queue options of this command reach each process too (``create_worker_app``)
    os.environ.update({NO_WORKER_ENV: "" if config.run_worker else "1",
                       "IDCS_WORKER_CONCURRENCY": str(config.worker_concurrency),
                       **({"IDCS_NODE_NAME": config.node_name} if config.node_name else {})})
    os.environ.update({"IDCS_DATA_DIR": str(config.data_dir), "IDCS_DATABASE_URL": config.db_url,
                       WORKER_ENV: f"{args.host}:{args.port}:{args.log_level}", SERVE_BOOT_ENV: uuid.uuid4().hex})
    print(f"OpenIDCS listening on {'https' if 'ssl_certfile' in run else 'http'}://{args.host}:{args.port} "
          f"with {args.workers} worker processes (data: {config.data_dir})", flush=True)
    uvicorn.run("idcs_core.app:create_worker_app", factory=True, workers=args.workers, **run)
    return 0


async def _with_core(config: Config, fn: Any) -> Any:
    from idcs_core.context import CoreContext
    from idcs_core.plugins import PluginRegistry

    config.create_admin = False
    # serve=False: a server may be running on this database; its tasks are not "interrupted"
    core = await CoreContext.start(config, PluginRegistry(), serve=False)
    try:
        return await fn(core)
    finally:
        await core.stop()


def _read_password(args: argparse.Namespace) -> str:
    if getattr(args, "password", None):
        return str(args.password)
    if os.environ.get("IDCS_PASSWORD"):
        return os.environ["IDCS_PASSWORD"]
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise SystemExit("passwords differ")
    return first


def cmd_user(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from idcs_core import errors
    from idcs_core.db.models import User
    from idcs_core.services import users
    from idcs_core.services.auth import TOKEN_RECHECK_SECONDS

    config = _config(args)

    async def run(core: Any) -> int:
        if args.action == "list":
            for u in await users.list_users(core):
                print(f"{u.id:>4}  {u.username:<24} {'admin' if u.is_admin else 'user ':<6} {u.email}")
            return 0
        if args.action == "create":
            user = await users.create_user(core, args.username, _read_password(args), args.email or "", args.admin)
            print(f"created user {user.username} (id {user.id})")
            return 0
        async with core.db.session() as s:
            user = (await s.execute(select(User).where(User.username == args.username))).scalar_one_or_none()
        if user is None:
            raise errors.UserNotFound(f"user {args.username} does not exist")
        # update_user revokes the user's sessions in the database; servers on PostgreSQL hear it
        # at once (NOTIFY), a server on SQLite notices within TOKEN_RECHECK_SECONDS
        await users.update_user(core, user.id, {"password": _read_password(args)})
        when = "at once" if core.db.shared else f"within {TOKEN_RECHECK_SECONDS:g} s"
        print(f"password of {args.username} changed; their sessions are logged out "
              f"(a running server stops their tokens {when})")
        return 0

    try:
        return int(asyncio.run(_with_core(config, run)))
    except Exception as exc:
        print(f"idcs user {args.action}: {getattr(exc, 'msg', exc)}", file=sys.stderr)
        return 1


def cmd_token(args: argparse.Namespace) -> int:
    """Named API tokens for billing modules (the secret is printed once, at creation)."""
    config = _config(args)

    async def run(core: Any) -> int:
        named = core.auth.named
        if args.action == "create":
            data = await named.create(args.name, args.profile, args.scope or [], args.expires_days)
            print(f"created API token {data.record.name} (id {data.record.id}, profile {data.record.profile}); "
                  "its secret, shown only now:")
            print(data.secret)
            return 0
        if args.action == "revoke":
            revoked = await named.revoke(args.id)
            print(f"revoked API token {revoked.name} (id {revoked.id})")
            return 0
        for t in await named.list():
            state = "revoked" if t.revoked_at is not None else "active"
            print(f"{t.id:>4}  {t.name:<24} {t.profile:<10} {state:<8} {','.join(t.scopes) or '-':<18} "
                  f"expires {t.expires_at or 'never'}  last used {t.last_used_at or 'never'}")
        return 0

    try:
        return int(asyncio.run(_with_core(config, run)))
    except Exception as exc:
        print(f"idcs token {args.action}: {getattr(exc, 'msg', exc)}", file=sys.stderr)
        return 1


def cmd_plugins(args: argparse.Namespace) -> int:
    from idcs_core.plugins import load_plugins

    rows = load_plugins().describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no plugins installed")
    for row in rows:
        if row.get("error"):
            print(f"{row['name']:<14} {row['kind']:<7} FAILED  {row['error']}")
        else:
            caps = ", ".join(row.get("capabilities") or row.get("hooks") or [])
            print(f"{row['name']:<14} {row['kind']:<7} {row.get('distribution') or '-'} {row.get('version') or ''}"
                  f"\n{'':<23}{caps}")
    return 1 if any(r.get("error") for r in rows) else 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run queued tasks and the cluster's periodic work, without serving the API (PostgreSQL only)."""
    from idcs_core.logsafe import SafeFormatter
    from idcs_core.queue import queue_available

    config = _config(args)
    if not config.db_url.startswith("postgresql"):
        print("idcs worker: needs a PostgreSQL database (--database-url or $IDCS_DATABASE_URL); "
              "on SQLite the server runs its tasks itself", file=sys.stderr)
        return 2
    if not queue_available():
        print("idcs worker: procrastinate is not installed (pip install 'idcs-core[cluster]')", file=sys.stderr)
        return 2
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    config.worker_concurrency = args.concurrency or config.worker_concurrency
    config.node_name = args.name or config.node_name
    config.shutdown_grace = args.grace
    return int(asyncio.run(run_worker(config)))


async def run_worker(config: Config, plugins: Any = None) -> int:
    """The body of ``idcs worker`` (``plugins``: the installed ones unless a registry is given)."""
    import signal

    from idcs_core.context import CoreContext
    from idcs_core.queue.runner import QueueTaskRunner

    config.role, config.run_worker, config.create_admin = "worker", True, False
    core = await CoreContext.start(config, plugins)
    runner = core.tasks
    assert isinstance(runner, QueueTaskRunner)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    name = core.node.name if core.node else "worker"
    print(f"OpenIDCS worker {name} running (concurrency {config.worker_concurrency})", flush=True)
    waiting = asyncio.ensure_future(stopping.wait())
    await asyncio.wait([waiting, asyncio.ensure_future(runner.wait_worker())], return_when=asyncio.FIRST_COMPLETED)
    # SIGTERM: no new job; the running ones get ``grace`` seconds to end (their tasks finish and are
    # recorded); those still running then are aborted and queued again for another worker to recover
    await runner.shutdown(grace=config.shutdown_grace)
    await core.stop()
    print(f"OpenIDCS worker {name} stopped", flush=True)
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    """Nodes, workers and the task queue of the cluster on this database."""
    from idcs_core.cluster.status import cluster_status, render

    config = _config(args)
    try:
        status = asyncio.run(_with_core(config, cluster_status))
    except Exception as exc:
        print(f"idcs cluster status: {getattr(exc, 'msg', exc)}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from idcs_core.db.session import upgrade

    config = _config(args)
    upgrade(config.db_url, args.revision)
    print(f"database at revision {args.revision}: {config.db_url.split('@')[-1]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idcs", description="OpenIDCS control plane")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="data directory (default: $IDCS_DATA_DIR or ./data)")
        p.add_argument("--database-url", help="database URL (default: $IDCS_DATABASE_URL or SQLite in the data dir)")

    serve = sub.add_parser("serve", help="run the API server")
    common(serve)
    serve.add_argument("--host", default=os.environ.get("IDCS_HOST", "0.0.0.0"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("IDCS_PORT", "1880")))
    serve.add_argument("--tls-cert", help="PEM certificate: serve HTTPS")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument("--self-signed", action="store_true",
                       help="serve HTTPS with a self-signed pair made once in the data dir")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument("--trusted-proxy", action="append",
                       default=[os.environ["IDCS_TRUSTED_PROXIES"]] if os.environ.get("IDCS_TRUSTED_PROXIES") else [],
                       help="address (or CIDR) of a load balancer whose X-Forwarded-For is believed; repeatable "
                            "or comma-separated (default: $IDCS_TRUSTED_PROXIES, else none)")
    serve.add_argument("--no-worker", action="store_true",
                       help="on PostgreSQL: run no queued tasks here (leave them to `idcs worker` processes)")
    serve.add_argument("--concurrency", type=int, help="tasks this server's worker runs at once (default 4)")
    serve.add_argument("--name", help="this node's name in `idcs cluster status` (default: host-role-pid)")
    serve.add_argument("--workers", type=int, default=int(os.environ.get("IDCS_WORKERS", "1")),
                       help="server processes sharing the port (more than 1 needs PostgreSQL)")
    serve.set_defaults(fn=cmd_serve)

    worker = sub.add_parser("worker", help="run queued tasks and the cluster's periodic work (PostgreSQL)")
    common(worker)
    worker.add_argument("--concurrency", type=int, help="tasks run at once (default 4)")
    worker.add_argument("--name", help="this worker's name in `idcs cluster status` (default: host-worker-pid)")
    worker.add_argument("--grace", type=float, default=60.0,
                        help="seconds running tasks get to end at SIGTERM before they are handed back (default 60)")
    worker.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    worker.set_defaults(fn=cmd_worker)

    cluster = sub.add_parser("cluster", help="the nodes on this database")
    cluster_sub = cluster.add_subparsers(dest="action", required=True)
    cstatus = cluster_sub.add_parser("status", help="nodes, workers, queue depth, oldest waiting job")
    cstatus.add_argument("--json", action="store_true")
    common(cstatus)
    cluster.set_defaults(fn=cmd_cluster)

    user = sub.add_parser("user", help="manage users")
    user_sub = user.add_subparsers(dest="action", required=True)
    create = user_sub.add_parser("create")
    create.add_argument("username")
    create.add_argument("--email")
    create.add_argument("--admin", action="store_true")
    create.add_argument("--password", help="(else $IDCS_PASSWORD, else asked)")
    passwd = user_sub.add_parser("passwd")
    passwd.add_argument("username")
    passwd.add_argument("--password", help="(else $IDCS_PASSWORD, else asked)")
    user_sub.add_parser("list")
    for p in (create, passwd, user_sub.choices["list"]):
        common(p)
    user.set_defaults(fn=cmd_user)

    from idcs_core.profiles import PROFILES
    from idcs_core.services.api_tokens import SCOPES

    token = sub.add_parser("token", help="named API tokens for billing modules (profiles: "
                           + ", ".join(PROFILES) + ")")
    token_sub = token.add_subparsers(dest="action", required=True)
    tcreate = token_sub.add_parser("create", help="create a token; prints its secret once")
    tcreate.add_argument("name")
    tcreate.add_argument("--profile", default="openidcs", choices=list(PROFILES),
                         help="the billing module's dialect (default: openidcs)")
    tcreate.add_argument("--scope", action="append", choices=list(SCOPES), help="narrow the token (repeatable)")
    tcreate.add_argument("--expires-days", type=int, help="days until the token expires (default: never)")
    trevoke = token_sub.add_parser("revoke", help="revoke a token at once")
    trevoke.add_argument("id", type=int)
    token_sub.add_parser("list", help="tokens with profile, scopes, expiry and last use")
    for p in (tcreate, trevoke, token_sub.choices["list"]):
        common(p)
    token.set_defaults(fn=cmd_token)

    plugins = sub.add_parser("plugins", help="list installed engines and plugins, with load errors")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(fn=cmd_plugins)

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="action", required=True)
    up = db_sub.add_parser("upgrade")
    up.add_argument("revision", nargs="?", default="head")
    common(up)
    db.set_defaults(fn=cmd_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
