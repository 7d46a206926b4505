"""The core's reverse proxies: one Caddy per ``proxy_endpoint``, kept equal to the database.

``ProxyManager`` (``core.proxies``) serves the ``proxys`` rules of every host whose engine
has no ``proxy_add`` hook of its own and whose ``proxy_endpoint`` is not ``off``:

- ``add``/``remove`` change one rule live, by the ``@id`` of its routes;
- ``reconcile`` replaces the whole ``apps`` tree of a Caddy with the routes the database
  holds (at server start, when the Caddy restarted empty, when the listen ports or the TLS
  issuer changed, and when its routes differ from the records, e.g. after a VM was deleted);
- a watcher checks every ``CHECK_SECONDS`` that each Caddy in use runs (the local one is
  restarted if it died) and still serves exactly the records.

Changes to one Caddy are serialised by a lock per endpoint, so a reconciliation never
interleaves with a single-route change.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sqlalchemy import select

from idcs_core import errors
from idcs_core.db.models import VM, Host, NatRuleRow, ProxyRow
from idcs_core.proxy import config, endpoint, upstream
from idcs_core.proxy.admin import CaddyAdmin
from idcs_core.proxy.config import CaddyRoute, ProxyPorts
from idcs_core.proxy.endpoint import ProxyEndpoint
from idcs_core.proxy.local import LocalCaddy

if TYPE_CHECKING:
    from idcs_core.context import CoreContext

log = logging.getLogger("idcs.proxy")

CHECK_SECONDS = 2.0


class ProxyManager:
    def __init__(self, core: CoreContext) -> None:
        self.core = core
        self.local = LocalCaddy(core.config.data_dir / "caddy")
        self._remote: dict[str, CaddyAdmin] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._failing: set[str] = set()  # endpoints whose last check failed (logged once)

    # ------------------------------------------------------------------ which Caddy

    def endpoint_of(self, host: Host) -> ProxyEndpoint:
        try:
            return endpoint.parse((host.options or {}).get(endpoint.SETTING))
        except ValueError:  # stored before validation existed: the safe choice
            log.warning("host %s: invalid proxy_endpoint ignored, reverse proxy off", host.server_name)
            return ProxyEndpoint(endpoint.OFF)

    def serves(self, host: Host) -> bool:
        """Does the core's Caddy serve this host's ``proxys`` (no native proxy, not ``off``)?"""
        return not self.core.supports(host, "proxy_add") and self.endpoint_of(host).kind != endpoint.OFF

    def admin(self, ep: ProxyEndpoint) -> CaddyAdmin:
        if ep.kind == endpoint.LOCAL:
            return self.local.admin()
        if ep.key not in self._remote:
            self._remote[ep.key] = CaddyAdmin(url=ep.url)
        return self._remote[ep.key]

    def ports(self) -> ProxyPorts:
        s = self.core.settings
        return ProxyPorts(int(s.get("proxy_http_port")), int(s.get("proxy_https_port")),
                          str(s.get("proxy_tls_issuer")))

    def _lock(self, ep: ProxyEndpoint) -> asyncio.Lock:
        return self._locks.setdefault(ep.key, asyncio.Lock())

    # ------------------------------------------------------------------ records

    async def routes(self, ep: ProxyEndpoint | None = None) -> dict[str, list[CaddyRoute]]:
        """The routes the database holds, by endpoint key (only ``ep``'s when given).

        Upstreams through a NAT rule are derived again from the current records (the NAT
        rule may have moved); the others are the ones resolved when the rule was added.
        """
        result: dict[str, list[CaddyRoute]] = {}
        async with self.core.db.session() as s:
            hosts = {h.id: h for h in (await s.execute(select(Host))).scalars() if self.serves(h)}
            wanted = {hid: self.endpoint_of(h) for hid, h in hosts.items()}
            if ep is not None:
                wanted = {hid: e for hid, e in wanted.items() if e.key == ep.key}
            if not wanted:
                return result
            rows = (await s.execute(select(ProxyRow, VM.host_id).join(VM, VM.id == ProxyRow.vm_id)
                                    .where(VM.host_id.in_(list(wanted))).order_by(ProxyRow.id))).all()
            forwards: dict[int, list[tuple[int, int, str]]] = {}
            for nat in (await s.execute(select(NatRuleRow).where(NatRuleRow.host_id.in_(list(wanted))))).scalars():
                forwards.setdefault(nat.vm_id, []).append((nat.host_port, nat.vm_port, nat.protocol))
        for row, host_id in rows:
            host = hosts[host_id]
            dial = row.upstream
            if not row.lan_addr:
                address = upstream.public_address(str((host.options or {}).get("public_addr") or ""),
                                                  host.server_addr)
                dial = upstream.from_nat(forwards.get(row.vm_id, []), row.lan_port, address) or dial
            if not dial:
                log.warning("reverse proxy %s has no upstream recorded: left out", row.domain)
                continue
            result.setdefault(wanted[host_id].key, []).append(
                CaddyRoute(row.id, row.domain, dial, row.is_https))
        return result

    def _endpoints_in_use(self, by_key: dict[str, list[CaddyRoute]]) -> list[ProxyEndpoint]:
        return [endpoint.parse(key) for key in by_key]

    # ------------------------------------------------------------------ changes

    async def add(self, host: Host, route: CaddyRoute) -> None:
        """Serve ``route`` now (its record is already committed)."""
        ep = self.endpoint_of(host)
        admin = self.admin(ep)
        async with self._lock(ep):
            await self._ensure(ep)
            for server, item in route.placements(self.ports()):
                if await admin.has_id(item["@id"]):
                    await admin.replace_id(item["@id"], item)
                else:
                    await admin.insert_route(server, item)

    async def remove(self, host: Host, route: CaddyRoute) -> None:
        """Stop serving ``route`` (idempotent: a route already gone is fine)."""
        ep = self.endpoint_of(host)
        admin = self.admin(ep)
        async with self._lock(ep):
            await self._ensure(ep)
            for object_id in route.ids():
                await admin.delete_id(object_id)

    async def reconcile(self, ep: ProxyEndpoint) -> int:
        """Make the Caddy at ``ep`` serve exactly the records; return how many rules."""
        async with self._lock(ep):
            if ep.kind == endpoint.LOCAL:
                await self.local.start()
            return await self._load(ep)

    async def _load(self, ep: ProxyEndpoint) -> int:
        routes = (await self.routes(ep)).get(ep.key, [])
        await self.admin(ep).load_apps(config.apps(self.ports(), routes))
        log.info("reverse proxy %s: %d rule(s) loaded from the database", ep.key, len(routes))
        return len(routes)

    async def _ensure(self, ep: ProxyEndpoint) -> None:
        """The Caddy at ``ep`` runs with OpenIDCS's servers and settings (else: reload all)."""
        started = False
        if ep.kind == endpoint.LOCAL:
            started = await self.local.start()
        live = await self.admin(ep).get_apps()
        if started or config.route_ids(live) is None or not config.listens_on(live, self.ports()):
            await self._load(ep)

    # ------------------------------------------------------------------ server life

    async def start(self) -> None:
        """Reconcile every Caddy that serves rules, then watch them (a background task)."""
        try:
            by_key = await self.routes()
        except Exception:
            log.exception("reverse proxies: could not read the rules")
            by_key = {}
        for ep in self._endpoints_in_use(by_key):
            try:
                await self.reconcile(ep)
            except errors.IDCSError as exc:
                log.warning("reverse proxy %s not reconciled at start: %s", ep.key, exc.msg)
                self._failing.add(ep.key)
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            await self.check()

    async def check(self) -> None:
        """One watch round: every Caddy in use runs and serves exactly the records."""
        try:
            by_key = await self.routes()
        except Exception:  # database away: try again next round
            log.warning("reverse proxies: could not read the rules", exc_info=True)
            return
        if self.local.running() and endpoint.LOCAL not in by_key:
            by_key[endpoint.LOCAL] = []  # no rule left: still keep it equal (404 for removed ones)
        for key, routes in by_key.items():
            ep = endpoint.parse(key)
            try:
                async with self._lock(ep):
                    if ep.kind == endpoint.LOCAL and not self.local.running():
                        log.warning("the local Caddy is not running: starting it and reloading its rules")
                    await self._ensure(ep)
                    live = config.route_ids(await self.admin(ep).get_apps())
                    expected = {i for r in routes for i in r.ids()}
                    if live != expected:
                        log.info("reverse proxy %s differs from the records: reloading", key)
                        await self._load(ep)
            except errors.IDCSError as exc:
                if key not in self._failing:
                    log.warning("reverse proxy %s: %s", key, exc.msg)
                self._failing.add(key)
            else:
                if key in self._failing:
                    log.info("reverse proxy %s is back", key)
                self._failing.discard(key)

    async def stop(self) -> None:
        """Stop the local Caddy by its PID and close the admin clients."""
        for admin in self._remote.values():
            await admin.close()
        self._remote.clear()
        await self.local.stop()
