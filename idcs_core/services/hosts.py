"""Hosts: adding, changing and removing them, and asking many of them at once how they are."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from idcs_core import errors
from idcs_core.db.models import VM, Host
from idcs_core.services import host_options
from idcs_core.services.audit import recorded
from idcs_core.services.host_history import HostHistory
from idcs_core.services.host_options import EngineOptions
from idcs_core.services.images import kind_of
from idcs_core.services.lookup import get_host
from idcs_core.services.network import sync_nat
from idcs_core.types import HostStatus

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal

STATUS_TTL = 2.0  # seconds a host's live status is reused before asking again
CONNECT_FIELDS = ("server_type", "server_addr", "server_user", "server_pass", "options")
# The core's own per-host settings (shown as the host's ``config``, apart from the engine's
# ``options``); proxy_endpoint: where the host's reverse proxy lives (idcs_core.proxy.endpoint).
HOST_CONFIG_KEYS = ("ports_start", "ports_close", "public_addr", "server_plan", "proxy_endpoint")


class HostMonitor:
    """Live host status, fanned out concurrently with a per-host timeout and a short cache."""

    def __init__(self, core: CoreContext) -> None:
        self.core = core
        self._cache: dict[str, tuple[float, HostStatus | None, str]] = {}
        self._inflight: dict[str, asyncio.Future[tuple[HostStatus | None, str]]] = {}
        # a status call that timed out but whose worker thread still waits on the host
        self._stuck: dict[str, asyncio.Future[Any]] = {}
        self.history = HostHistory(core)  # each status asked is also a sample of the status history

    def forget(self, name: str) -> None:
        self._cache.pop(name, None)
        self._stuck.pop(name, None)  # new settings: ask the host afresh

    async def status(self, host: Host, fresh: bool = False) -> tuple[HostStatus | None, str]:
        """(status, error): status None and an error message when the host is offline."""
        cached = self._cache.get(host.server_name)
        if cached and not fresh and time.monotonic() - cached[0] < STATUS_TTL:
            return cached[1], cached[2]
        inflight = self._inflight.get(host.server_name)
        if inflight is not None:  # many concurrent list requests share one call per host
            return await asyncio.shield(inflight)
        stuck = self._stuck.get(host.server_name)
        if stuck is not None and not stuck.done():
            # the host has not even answered the last call: asking again would only tie up one
            # more worker thread per poll, until the pool is full and live hosts wait behind
            result: tuple[HostStatus | None, str] = (
                None, f"host {host.server_name} has not answered its previous status call yet")
            self._cache[host.server_name] = (time.monotonic(), *result)
            return result
        self._stuck.pop(host.server_name, None)
        fut: asyncio.Future[tuple[HostStatus | None, str]] = asyncio.get_running_loop().create_future()
        self._inflight[host.server_name] = fut
        try:
            try:
                result = (await self.core.engines.host_status(host), "")
            except errors.IDCSError as exc:
                result = (None, exc.msg)
                if isinstance(exc, errors.HookTimeout) and exc.pending is not None:
                    self._stuck[host.server_name] = exc.pending
            if cached and cached[1] is None and result[0] is not None:  # back online: re-apply NAT rules
                self.core.spawn(sync_nat(self.core, host.server_name))
            self._cache[host.server_name] = (time.monotonic(), *result)
            fut.set_result(result)
            await self.history.observe(host, result[0])
            return result
        finally:
            self._inflight.pop(host.server_name, None)

    async def status_many(self, hosts: list[Host]) -> list[tuple[HostStatus | None, str]]:
        return list(await asyncio.gather(*(self.status(h) for h in hosts)))


@dataclass(frozen=True)
class HostView:
    """A host with its live status (never its password)."""

    server_name: str
    server_type: str
    server_addr: str
    server_user: str
    server_area: str
    enabled: bool
    status: HostStatus | None  # None: the host did not answer (``error`` says why, when known)
    error: str
    vms_count: int  # the VMs recorded here
    config: dict[str, Any]  # the core's settings of the host (HOST_CONFIG_KEYS, enabled, token_any_port)
    options: dict[str, Any]  # the engine's options, with their defaults; secret ones only as "set" or ""
    created_at: datetime

    @property
    def online(self) -> bool:
        return self.status is not None and self.status.online


def host_view(host: Host, status: HostStatus | None, error: str, vms_count: int,
              declared: EngineOptions | None = None) -> HostView:
    """``host`` with its status; the engine's options with their defaults when ``declared`` is given."""
    opts = dict(host.options or {})
    config = {k: opts.get(k) for k in HOST_CONFIG_KEYS} | {"enabled": host.enabled} | (
        {"token_any_port": opts["token_any_port"]} if "token_any_port" in opts else {})
    options = host_options.for_answer(declared or EngineOptions(host.server_type, {}, typed=False),
                                      host.engine_options or {})
    return HostView(host.server_name, host.server_type, host.server_addr, host.server_user, host.server_area,
                    host.enabled, status, error, vms_count, config, options, host.created_at)


async def _hosts_and_counts(core: CoreContext) -> tuple[list[Host], dict[int, int]]:
    async with core.db.session() as s:
        hosts = list((await s.execute(select(Host).order_by(Host.id))).scalars())
        counts = dict((await s.execute(select(VM.host_id, func.count(VM.id)).group_by(VM.host_id))).all())
    return hosts, counts


async def host_rows(core: CoreContext) -> tuple[list[Host], dict[int, int]]:
    """Every host, and its VM count by host id: from memory until something is written."""
    return await core.reads.get("hosts", lambda: _hosts_and_counts(core))


async def list_hosts(core: CoreContext) -> list[HostView]:
    hosts, counts = await host_rows(core)  # the live status is asked anew
    statuses = await core.hosts.status_many(hosts)
    return [host_view(h, st, err, counts.get(h.id, 0), core.engine_options(h.server_type))
            for h, (st, err) in zip(hosts, statuses, strict=True)]


async def host_detail(core: CoreContext, hs_name: str, fresh: bool = False) -> HostView:
    async with core.db.session() as s:
        host = await get_host(s, hs_name)
        count = (await s.execute(select(func.count(VM.id)).where(VM.host_id == host.id))).scalar_one()
    status, error = await core.hosts.status(host, fresh=fresh)
    return host_view(host, status, error, count, core.engine_options(host.server_type))


def _check_engine(core: CoreContext, server_type: str) -> None:
    if server_type not in core.plugins.engines:
        installed = ", ".join(sorted(core.plugins.engines)) or "none"
        raise errors.BadRequest(f"server_type {server_type!r:.70} is not an installed engine (installed: {installed})")


def _merge_options(host: Host | None, fields: dict[str, Any]) -> dict[str, Any]:
    """The core's own settings of the host once ``fields`` apply (top-level fields, and core keys
    sent inside ``options``)."""
    options = dict(host.options or {}) if host else {}
    given = fields.get("options") or {}
    options.update({k: v for k, v in given.items() if k in host_options.CORE_SETTINGS})
    options.update({k: fields[k] for k in HOST_CONFIG_KEYS if fields.get(k) is not None})
    if options.get("ports_start") and options.get("ports_close") and \
            int(options["ports_start"]) > int(options["ports_close"]):
        raise errors.BadRequest("ports_start must not be greater than ports_close")
    return options


def _engine_options(core: CoreContext, server_type: str, stored: dict[str, Any], fields: dict[str, Any]
                    ) -> dict[str, Any]:
    """The engine's options to store: ``fields["options"]`` (without the core's keys) validated against
    what the engine of ``server_type`` declares; 400 naming the option, before anything is saved."""
    declared = core.engine_options(server_type)
    given = {k: v for k, v in (fields.get("options") or {}).items() if k not in host_options.CORE_SETTINGS}
    if declared.typed:  # options of another engine (the type changed) are not carried over
        stored = {k: v for k, v in stored.items() if k in declared.options}
    return host_options.validate(declared, stored, given, core.keys)


async def create_host(core: CoreContext, principal: Principal, fields: dict[str, Any]) -> HostView:
    async with recorded(core, principal, "host.create", fields["server_name"]):
        _check_engine(core, fields["server_type"])
        host = Host(server_name=fields["server_name"], server_type=fields["server_type"],
                    server_addr=fields["server_addr"], server_user=fields["server_user"],
                    server_pass_enc=core.keys.encrypt(fields["server_pass"]),
                    server_area=fields.get("server_area") or "", options=_merge_options(None, fields),
                    engine_options=_engine_options(core, fields["server_type"], {}, fields),
                    enabled=fields.get("enabled", True))
        async with core.db.session() as s:
            if (await s.execute(select(Host.id).where(Host.server_name == host.server_name))).first():
                raise errors.Conflict(f"a host named {host.server_name} already exists")
        # prove the address and credentials before anything is saved
        status = await core.engines.host_connect(host)
        try:
            async with core.db.session() as s:
                s.add(host)
        except IntegrityError as exc:
            raise errors.Conflict(f"a host named {host.server_name} already exists") from exc
        core.hosts.forget(host.server_name)
        await core.hosts.history.observe(host, status)  # its status history starts now
        await core.plugins.emit("host_changed", host=_event(host), change="created")
        return host_view(host, status, "", 0, core.engine_options(host.server_type))


async def update_host(core: CoreContext, principal: Principal, hs_name: str, fields: dict[str, Any]) -> HostView:
    async with recorded(core, principal, "host.update", hs_name, ", ".join(sorted(fields))):
        async with core.db.session() as s:
            host = await get_host(s, hs_name)
            if fields.get("server_addr") not in (None, host.server_addr) and fields.get("server_pass") is None:
                # the stored password must never be sent to an address it was not given for
                raise errors.BadRequest("server_pass is required when server_addr changes")
            old_spec = core.host_spec(host)
            if "server_type" in fields:
                _check_engine(core, fields["server_type"])
            if fields.get("server_name") and fields["server_name"] != host.server_name:
                if (await s.execute(select(Host.id).where(Host.server_name == fields["server_name"]))).first():
                    raise errors.Conflict(f"a host named {fields['server_name']} already exists")
                host.server_name = fields["server_name"]
            for key in ("server_type", "server_addr", "server_user", "server_area", "enabled"):
                if fields.get(key) is not None:
                    setattr(host, key, fields[key])
            if fields.get("server_pass") is not None:
                host.server_pass_enc = core.keys.encrypt(fields["server_pass"])
            host.options = _merge_options(host, fields)
            host.engine_options = _engine_options(core, host.server_type, dict(host.engine_options or {}), fields)
            reconnect = any(fields.get(k) is not None for k in CONNECT_FIELDS)
            if reconnect:  # prove the new settings work before they are committed
                await core.engines.host_connect(host)
        if reconnect:
            await _close(core, old_spec)
        core.hosts.forget(hs_name)
        core.hosts.forget(host.server_name)
        core.images.forget(host.id)
        await core.plugins.emit("host_changed", host=_event(host), change="updated")
        return await host_detail(core, host.server_name, fresh=True)


async def delete_host(core: CoreContext, principal: Principal, hs_name: str, force: bool) -> None:
    async with recorded(core, principal, "host.delete", hs_name):
        async with core.db.session() as s:
            host = await get_host(s, hs_name)
            count = (await s.execute(select(func.count(VM.id)).where(VM.host_id == host.id))).scalar_one()
            if count and not force:
                raise errors.BadRequest(
                    f"host {hs_name} still has {count} managed VM(s): delete them first, or pass force=true "
                    "to forget the host and its VM records (the VMs on the host are left untouched)")
            spec = core.host_spec(host)
            event = _event(host)
            await s.delete(host)
        await _close(core, spec)
        core.hosts.forget(hs_name)
        core.images.forget(host.id)
        if count:
            from idcs_core.services.users import recalculate_quotas

            await recalculate_quotas(core)
        await core.plugins.emit("host_changed", host=event, change="deleted")


async def _close(core: CoreContext, spec: Any) -> None:
    try:
        await core.engines.host_close(spec)
    except errors.IDCSError:
        pass


def _event(host: Host) -> dict[str, Any]:
    return {"server_name": host.server_name, "server_type": host.server_type, "server_addr": host.server_addr}


async def power_host(core: CoreContext, principal: Principal, hs_name: str, action: str) -> None:
    async with recorded(core, principal, "host.power", hs_name, action):
        async with core.db.session() as s:
            host = await get_host(s, hs_name)
        await core.engines.host_power(host, action)
        core.hosts.forget(hs_name)


async def set_enabled(core: CoreContext, principal: Principal, hs_name: str, enabled: bool) -> HostView:
    async with recorded(core, principal, "host.enable" if enabled else "host.disable", hs_name):
        async with core.db.session() as s:
            host = await get_host(s, hs_name)
            host.enabled = enabled
        return await host_detail(core, hs_name)


async def os_images(core: CoreContext, hs_name: str) -> dict[str, list[dict[str, str]]]:
    async with core.db.session() as s:
        host = await get_host(s, hs_name)
    images = await core.images.list(host, fresh=True)
    grouped: dict[str, list[dict[str, str]]] = {}
    for image in images:
        grouped.setdefault(image.family or "other", []).append(
            {"name": image.name, "file": image.file, "kind": kind_of(image).value})
    return grouped
