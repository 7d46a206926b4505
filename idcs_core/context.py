"""The core of one running server: configuration, database, keys, plugins, services.

Built once at start-up (``CoreContext.start``) and handed to every route and
service. Nothing here is global, so tests can run several servers in one
process.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, select

from idcs_core import errors
from idcs_core.cluster.leader import ClusterLeader
from idcs_core.cluster.nodes import NodeRegistry
from idcs_core.config import Config
from idcs_core.db.bus import ChangeBus
from idcs_core.db.cache import ReadCache
from idcs_core.db.models import AuditLog, Host, Setting, utcnow
from idcs_core.db.session import Database, upgrade
from idcs_core.default_plugins import register_defaults, unregister_defaults
from idcs_core.engines import EngineFacade
from idcs_core.plugins import Engine, PluginRegistry, load_plugins
from idcs_core.proxy.manager import ProxyManager
from idcs_core.queue import choose_runner, queue_available
from idcs_core.security import Keys
from idcs_core.services import audit, host_options
from idcs_core.services.auth import AuthService, Principal
from idcs_core.services.console_tickets import ConsoleTickets
from idcs_core.services.host_options import EngineOptions
from idcs_core.services.hosts import HostMonitor
from idcs_core.services.images import ImageCatalog
from idcs_core.services.settings import SettingsService
from idcs_core.services.system import MachineUsage
from idcs_core.tasks import TaskRunner
from idcs_core.types import HostSpec

log = logging.getLogger("idcs")
T = TypeVar("T")

# Per-host settings only the core uses: never handed to engines in HostSpec.options.
CORE_ONLY_OPTIONS = frozenset({"proxy_endpoint"})
AUDIT_PRUNE_SECONDS = 24 * 3600.0  # how often a serving core drops audit entries older than audit_keep_days
RECOVERY_GRACE = 20.0  # seconds start-up waits for interrupted tasks to be recovered before serving


SERVE_BOOT_ENV = "IDCS_SERVE_BOOT"  # set by ``idcs serve --workers N`` for its worker processes
SERVE_BOOT_KEY = "serve_boot"  # settings row: the boot whose start-up work was claimed


async def start_up_lead(core: CoreContext) -> bool:
    """True for the one process of an ``idcs serve --workers N`` start (``SERVE_BOOT_ENV``) that
    claims the start-up work, and for every plain ``idcs serve``: one conditional upsert of the
    ``serve_boot`` settings row to this boot's id succeeds for the first worker only."""
    boot = os.environ.get(SERVE_BOOT_ENV)
    if not boot or not core.db.shared:
        return True
    from sqlalchemy import Text, cast
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    stmt = pg_insert(Setting).values(key=SERVE_BOOT_KEY, value=boot)
    stmt = stmt.on_conflict_do_update(index_elements=["key"], set_={"value": stmt.excluded.value},
                                      where=cast(Setting.value, Text) != cast(stmt.excluded.value, Text))
    async with core.db.session() as s:
        won = (await s.execute(stmt.returning(Setting.key))).first()
    return won is not None


class CoreContext:
    def __init__(self, config: Config, plugins: PluginRegistry | None = None) -> None:
        self.config = config
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.keys = Keys(config.data_dir)
        self.db = Database(config.db_url)
        self.bus = ChangeBus(self.db)  # a serving core hears the other nodes' commits (PostgreSQL)
        self.reads = ReadCache(self.db)
        self.machine = MachineUsage(str(config.data_dir))
        self.plugins = plugins if plugins is not None else load_plugins()
        self.engines = EngineFacade(self)  # the typed way services call engine hooks
        self._engine_options: dict[str, EngineOptions] = {}
        self.images = ImageCatalog(self)  # each host's images/ISOs: what create and ISO mount accept
        self.settings = SettingsService(self)
        self.auth = AuthService(self)
        self.console_tickets = ConsoleTickets(self)  # one-time links of the console/terminal pages
        # in-process on SQLite, procrastinate jobs on PostgreSQL (idcs_core.queue): the same protocol
        self.tasks: TaskRunner = choose_runner(self)
        self.leader = ClusterLeader(self)  # whether this node runs the once-per-cluster periodic work
        self.node: NodeRegistry | None = None  # this process's row in cluster_nodes (a serving core)
        self.hosts = HostMonitor(self)
        self.proxies = ProxyManager(self)
        self.background: set[asyncio.Task[Any]] = set()
        self.ops: Any = None  # idcs_core.ops.runtime.Operations of a serving core
        # False in all but one of the processes of ``idcs serve --workers N`` (``start_up_lead``):
        # those skip the start-up work (recovery, NAT re-sync, proxies) and the periodic loops
        self.lead = True
        self._default_plugins = register_defaults(self)  # the audit log among them

    @classmethod
    async def start(cls, config: Config, plugins: PluginRegistry | None = None, *,
                    serve: bool = True) -> CoreContext:
        """Upgrade the schema, load settings and keys; when ``serve``, also recover from a crash
        and start the background work of a server.

        ``serve=False`` is for one-off commands (``idcs user ...``) that may run while a server
        uses the same database: they must not fail that server's running tasks as
        "interrupted", re-apply NAT rules or prune the audit log.
        """
        await asyncio.to_thread(upgrade, config.db_url)
        core = cls(config, plugins)
        await core.settings.load()
        await core.auth.load()
        from idcs_core.services import network, users, vms

        if config.create_admin:
            await users.ensure_first_admin(core)
        if not serve:
            return core
        await core.bus.start()
        core.lead = await start_up_lead(core)
        if not core.lead:
            log.info("another worker of this server does the start-up work (the local Caddy); the cluster's "
                     "leader runs the periodic work")
        from idcs_core.ops.runtime import Operations

        # webhooks, live events, metrics, backup schedules: before recovery, so webhooks hear its outcomes
        core.ops = await Operations.start(core)
        await core._join_cluster()
        await core.recover_tasks()
        core.spawn(vms.reconcile_interrupted(core))  # VMs left in between by no task (older data)
        # once per cluster, by the node that leads (on SQLite: this one, now)
        core.leader.on_lead(lambda: network.sync_nat(core))  # forwards that did not survive a host reboot
        await core.leader.start()
        if core.leader.leads():
            await core.prune_audit()
        core.spawn(core._prune_audit_daily())
        if config.role != "worker" and core.lead:  # one Caddy per machine (``serve --workers N``: the lead)
            core.spawn(core.proxies.start())  # reverse proxies reconciled from the records, then watched
        await core.plugins.emit("idcs_startup", config={
            "data_dir": str(config.data_dir), "database": core.db.engine.dialect.name,
            "listen": f"{config.host}:{config.port}"})
        return core

    async def _join_cluster(self) -> None:
        """On the queue (PostgreSQL): connect, start this process's worker (unless ``run_worker`` is off)
        and the leader's sweep of dead workers' jobs. Every serving process: its row in the nodes registry."""
        worker_id = None
        role = self.config.role
        queue = None
        if queue_available():  # procrastinate (the ``cluster`` extra) is never imported without it
            from idcs_core.queue.runner import QueueTaskRunner

            queue = self.tasks if isinstance(self.tasks, QueueTaskRunner) else None
        if queue is not None:
            await queue.open()
            if self.config.run_worker:
                worker_id = await queue.start_worker(self.config.worker_concurrency, self.config.node_name)
                role = role if role == "worker" else f"{role}+worker"
            self.spawn(self._sweep_as_leader(queue))
        self.node = NodeRegistry(self, role, self.config.node_name)
        await self.node.start(worker_id, queue=queue is not None)

    async def _sweep_as_leader(self, runner: Any) -> None:
        from idcs_core.queue.runner import SWEEP_SECONDS

        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            if not self.leader.leads():
                continue
            try:
                await runner.sweep()
            except Exception:  # the database away for a moment: next round
                log.exception("the queue's sweep failed; again in %g s", SWEEP_SECONDS)

    async def recover_tasks(self) -> None:
        """Resolve the tasks a dead process left running against the back end, before the server
        answers any request (uvicorn listens once start-up is done). Recoveries whose host does
        not answer within ``RECOVERY_GRACE`` go on in the background; their VMs stay busy."""
        resumed = await self.tasks.recover()
        if not resumed:
            return
        log.warning("%d task(s) were interrupted by a restart: recovering them", len(resumed))
        still = await self.tasks.settle(resumed, RECOVERY_GRACE)
        if still:
            log.warning("%d recovery(ies) still wait for their hosts; serving meanwhile (their VMs are busy)",
                        len(still))

    async def stop(self) -> None:
        await self.tasks.shutdown(self.config.shutdown_grace)
        await self.leader.stop()
        if self.node is not None:
            await self.node.stop()
        if self.ops is not None:
            await self.ops.stop()
        for task in list(self.background):
            task.cancel()
        await self.proxies.stop()
        await self.bus.stop()
        await self._close_hosts()
        unregister_defaults(self, self._default_plugins)
        await self.db.dispose()

    async def _close_hosts(self) -> None:
        """Let each engine release what it holds for its hosts (sessions, pools): ``host_close``."""
        try:
            async with self.db.session() as s:
                hosts = list((await s.execute(select(Host))).scalars())
        except Exception:  # a database that is gone must not stop the shut-down
            log.warning("could not list the hosts to close their sessions", exc_info=True)
            return
        engines = self.plugins.engines
        closing = [self.engines.host_close(h) for h in hosts
                   if h.server_type in engines and engines[h.server_type].supports("host_close")]
        for result in await asyncio.gather(*closing, return_exceptions=True):
            if isinstance(result, Exception):
                log.warning("host_close failed at shut-down: %s", result)

    async def prune_audit(self) -> int:
        """Delete audit entries older than the ``audit_keep_days`` setting; return how many."""
        cutoff = utcnow() - timedelta(days=int(self.settings.get("audit_keep_days")))
        async with self.db.session() as s:
            result = await s.execute(delete(AuditLog).where(AuditLog.ts < cutoff))
        removed = int(getattr(result, "rowcount", 0) or 0)
        if removed:
            log.info("audit log: %d entries older than %s removed", removed, cutoff.date())
        return removed

    async def _prune_audit_once(self) -> None:
        try:
            await self.prune_audit()
        except Exception:  # a failed round (database away) must not end the loop
            log.exception("pruning the audit log failed; trying again in %g s", AUDIT_PRUNE_SECONDS)

    async def _prune_audit_daily(self) -> None:
        """Once a day, on the node leading the cluster (and when a node becomes the leader)."""
        while True:
            await asyncio.sleep(AUDIT_PRUNE_SECONDS)
            if self.leader.leads():
                await self._prune_audit_once()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))

    async def audit(self, principal: Principal | None, action: str, target: str = "", result: str = "success",
                    detail: str = "", source_ip: str = "") -> None:
        await audit.record(self, principal, action, target, result, detail, source_ip)

    # ------------------------------------------------------------------ engines

    def engine_options(self, server_type: str) -> EngineOptions:
        """The host options the engine of ``server_type`` declares (read once per engine)."""
        declared = self._engine_options.get(server_type)
        if declared is None:
            engine = self.plugins.engines.get(server_type)
            declared = host_options.declared(engine) if engine else EngineOptions(server_type, {}, typed=False)
            self._engine_options[server_type] = declared
        return declared

    def host_spec(self, host: Host) -> HostSpec:
        """What an engine receives for ``host``: its password decrypted, its declared options with their
        defaults (secrets decrypted). Engines of the first contract (untyped options) also get the
        core's settings, as they always did."""
        declared = self.engine_options(host.server_type)
        options = host_options.for_engine(declared, host.engine_options or {}, self.keys)
        if not declared.typed:
            options = {k: v for k, v in (host.options or {}).items() if k not in CORE_ONLY_OPTIONS} | options
        return HostSpec(name=host.server_name, server_type=host.server_type, addr=host.server_addr,
                        user=host.server_user, password=self.keys.decrypt(host.server_pass_enc), options=options)

    def engine_for(self, host: Host) -> Engine:
        return self.plugins.engine(host.server_type)

    def require(self, host: Host, hook: str, what: str) -> None:
        """Raise 1006 "<what> is not supported by the X engine" unless the engine has ``hook``."""
        if not self.supports(host, hook):
            raise errors.NotSupported(f"{what} is not supported by the {host.server_type} engine")

    def supports(self, host: Host, hook: str) -> bool:
        try:
            return self.engine_for(host).supports(hook)
        except errors.NotSupported:
            return False

