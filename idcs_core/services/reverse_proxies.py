"""A VM's reverse proxies (web domains): adding and removing one are tasks of kinds ``proxy_add``
and ``proxy_delete`` (audited as ``proxy.add`` / ``proxy.delete`` when they end).

A rule is served by the engine's own reverse proxy (``proxy_add`` / ``proxy_remove``) where it has
one, else by the core's Caddy (``core.proxies``, kept equal to the database by its watcher).
Adding: the request checks the rule and resolves where Caddy reaches the VM, then records the rule
(the domain's unique constraint reserves it) with its task; the handler applies it; if applying
fails, the record goes (nothing half-made). Removing: the route goes, then the record.

- A hook that answers after its timeout (``late_hooks``): a route the engine made late, after its
  record went, is removed again; a route removed late has its record dropped. (The core's Caddy
  needs no such care: its watcher makes Caddy serve exactly the records.)
- A task left running by a dead process: an interrupted add is undone (the caller had no answer and
  a billing module retries what did not answer, which then finds the domain free): the route is
  removed (idempotent), the record goes and the task fails saying so. An interrupted removal is
  finished and succeeds.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from idcs_core import aliases, errors
from idcs_core.aliases import aliased
from idcs_core.db.models import VM, NatRuleRow, ProxyRow, Task
from idcs_core.proxy import upstream
from idcs_core.proxy.config import CaddyRoute
from idcs_core.services import limits
from idcs_core.services.late_hooks import settle_late
from idcs_core.services.lookup import get_vm, task_record
from idcs_core.services.network import _next_idx, _per_vm_limit
from idcs_core.tasks import answer_of, task_handler, task_recovery
from idcs_core.types import ProxyRule, VMInfo

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal
    from idcs_core.tasks import TaskProgress

log = logging.getLogger("idcs.network")


def proxy_dict(row: ProxyRow) -> dict[str, Any]:
    return aliased({"proxy_index": row.idx, "domain": row.domain, "lan_port": row.lan_port, "lan_addr": row.lan_addr,
                    "wan_addr": row.wan_addr, "is_https": row.is_https, "tips": row.tips}, aliases.PROXY)


async def list_proxies(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str) -> list[dict[str, Any]]:
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        rows = (await s.execute(select(ProxyRow).where(ProxyRow.vm_id == vm.id).order_by(ProxyRow.idx))).scalars()
        return [proxy_dict(r) for r in rows]


def _route(row: ProxyRow) -> CaddyRoute:
    return CaddyRoute(row.id, row.domain, row.upstream, row.is_https)


def _rule(row: ProxyRow) -> ProxyRule:
    return ProxyRule(row.domain, row.lan_port, row.lan_addr, row.is_https)


async def _proxy_upstream(core: CoreContext, vm: VM, lan_port: int, lan_addr: str) -> str:
    """Where the core's Caddy reaches the VM's ``lan_port`` (see ``idcs_core.proxy.upstream``):
    ``lan_addr`` when given (``limits.check_lan_addr`` holds a normal user to the VM's own
    addresses), else a NAT rule forwarding TCP to it, else the VM's address; 400 when nothing
    reaches it."""
    if lan_addr:
        return upstream.dial(lan_addr, lan_port)
    host = vm.host
    async with core.db.session() as s:
        forwards = [(r.host_port, r.vm_port, r.protocol) for r in (await s.execute(
            select(NatRuleRow).where(NatRuleRow.vm_id == vm.id))).scalars()]
    live: list[str] = []
    if not upstream.from_nat(forwards, lan_port, "x"):
        info: VMInfo = await core.engines.vm_status(vm)
        live = list(info.ip_addresses)
    address = upstream.public_address(str((host.options or {}).get("public_addr") or ""), host.server_addr)
    found = upstream.from_nat(forwards, lan_port, address) or upstream.from_vm_addresses(live, lan_port)
    if not found:
        raise errors.BadRequest(f"nothing reaches port {lan_port} of {vm.vm_uuid} from the reverse proxy: the VM "
                                f"reports no address and no NAT rule forwards TCP to {lan_port}; add one first")
    return found


async def add_proxy(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str,
                    fields: dict[str, Any]) -> dict[str, Any]:
    """Serve ``domain`` from the VM's ``lan_port``: checked and its upstream resolved first, then
    recorded with its ``proxy_add`` task, which the call waits for."""
    lan_addr = fields.get("lan_addr") or ""
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        native = core.supports(vm.host, "proxy_add")
        if not native and not core.proxies.serves(vm.host):
            core.require(vm.host, "proxy_add", "reverse proxies (the host's proxy_endpoint is off)")
        await limits.check_lan_addr(core, s, principal, vm, fields.get("lan_addr"))
        await limits.check_proxy_domain(core, s, principal, vm, fields["domain"])
        limit = _per_vm_limit(vm, "web_num")
        count = (await s.execute(select(func.count(ProxyRow.id)).where(ProxyRow.vm_id == vm.id))).scalar_one()
        if limit is not None and count >= limit:
            raise errors.QuotaExceeded(f"this VM may have at most {limit} reverse proxies")
        if (await s.execute(select(ProxyRow.id).where(ProxyRow.domain == fields["domain"]))).first():
            raise errors.Conflict(f"domain {fields['domain']} is already in use")
    dial = "" if native else await _proxy_upstream(core, vm, fields["lan_port"], lan_addr)
    async with core.db.session() as s:
        row = ProxyRow(vm_id=vm.id, idx=await _next_idx(s, ProxyRow, vm.id), domain=fields["domain"],
                       lan_port=fields["lan_port"], lan_addr=lan_addr,
                       wan_addr=fields.get("wan_addr") or "", is_https=bool(fields.get("is_https")),
                       tips=fields.get("tips") or "", upstream=dial)
        s.add(row)
        try:
            await s.flush()
        except IntegrityError as exc:
            raise errors.Conflict(f"domain {fields['domain']} is already in use") from exc
        task = core.tasks.add(s, "proxy_add", host_name=hs_name, vm_uuid=vm_uuid, user_id=principal.user_id,
                              params={"proxy_id": row.id, "native": native})
    result = await core.tasks.run(task.id)
    return answer_of(result)


async def _target(core: CoreContext, task: Task) -> tuple[ProxyRow, VM] | None:
    """The task's rule and its VM, or None when the record is gone."""
    async with core.db.session() as s:
        return await task_record(s, ProxyRow, task.params["proxy_id"])


async def _drop(core: CoreContext, row_id: int) -> None:
    async with core.db.session() as s:
        row = await s.get(ProxyRow, row_id)
        if row is not None:
            await s.delete(row)


async def _unserve(core: CoreContext, vm: VM, row: ProxyRow, native: bool) -> None:
    """Take the rule's route away (idempotent), where it was served."""
    if native:
        await core.engines.proxy_remove(vm, _rule(row))
    elif core.proxies.serves(vm.host):
        await core.proxies.remove(vm.host, _route(row))
    # else: the host's proxy_endpoint was set to off after the rule was made: nothing serves it


@task_handler("proxy_add")
async def _run_proxy_add(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    target = await _target(core, task)
    if target is None:
        raise errors.NotFound("the reverse proxy was removed before it was applied")
    row, vm = target
    native = bool(task.params.get("native"))
    progress(10, f"serving {row.domain} from port {row.lan_port} of {vm.vm_uuid}")
    try:
        if native:
            await core.engines.proxy_add(vm, _rule(row))
        else:
            await core.proxies.add(vm.host, _route(row))
    except errors.IDCSError as exc:
        await _drop(core, row.id)
        if native:
            settle_late(core, exc, f"reverse proxy {row.domain} of {vm.host.server_name}/{vm.vm_uuid}",
                        lambda _result: core.engines.proxy_remove(vm, _rule(row)))
        raise
    return proxy_dict(row) | {"message": f"{row.domain} served"}


# Recovery rule of an interrupted reverse-proxy add: see the module's docstring (undone, the task fails).
@task_recovery("proxy_add")
async def _recover_proxy_add(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    target = await _target(core, task)
    if target is None:
        raise errors.NotFound("the server stopped while this reverse proxy was being added, and its record is gone")
    row, vm = target
    try:
        await _unserve(core, vm, row, bool(task.params.get("native")))
    except errors.VMNotFound:
        pass  # the VM (and so its routes) is gone
    except errors.HostUnreachable:
        raise  # tried again once the host (or Caddy) answers
    except errors.IDCSError as exc:  # it may still be served: the record stays, so it can be deleted
        raise errors.VMOperationFailed(f"the server stopped while reverse proxy {row.domain} was being added, and "
                                       f"it could not be taken off ({exc.msg}): the rule is kept; delete it if "
                                       "unwanted") from exc
    await _drop(core, row.id)
    raise errors.VMOperationFailed(f"the server stopped while reverse proxy {row.domain} was being added: it was "
                                   "taken off and its domain released; add it again")


async def delete_proxy(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str, idx: int) -> None:
    """Stop serving a rule, then drop its record: a ``proxy_delete`` task, waited on."""
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        query = select(ProxyRow).where(ProxyRow.vm_id == vm.id, ProxyRow.idx == idx)
        row = (await s.execute(query)).scalar_one_or_none()
        if row is None:
            raise errors.NotFound(f"reverse proxy {idx} does not exist on {vm_uuid}")
        task = core.tasks.add(s, "proxy_delete", host_name=hs_name, vm_uuid=vm_uuid, user_id=principal.user_id,
                              params={"proxy_id": row.id, "native": core.supports(vm.host, "proxy_remove")})
    await core.tasks.run(task.id)


@task_handler("proxy_delete")
async def _run_proxy_delete(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    target = await _target(core, task)
    if target is None:
        return {"message": "the reverse proxy was already gone"}
    row, vm = target
    progress(10, f"no longer serving {row.domain}")
    try:
        await _unserve(core, vm, row, bool(task.params.get("native")))
    except errors.IDCSError as exc:
        settle_late(core, exc, f"reverse proxy {row.domain} of {vm.host.server_name}/{vm.vm_uuid} removed",
                    lambda _result: _drop(core, row.id))
        raise
    await _drop(core, row.id)
    return {"message": f"{row.domain} no longer served"}


# Recovery rule of an interrupted reverse-proxy removal: the user asked for it to go and removing is
# idempotent, so it is finished and the task succeeds; a VM gone from the host serves nothing (record goes).
@task_recovery("proxy_delete")
async def _recover_proxy_delete(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    try:
        return await _run_proxy_delete(core, task, progress)
    except errors.VMNotFound:
        await _drop(core, task.params["proxy_id"])
        return {"message": "the VM is gone, and so is the reverse proxy"}


async def domain_in_use(core: CoreContext, domain: str) -> bool:
    async with core.db.session() as s:
        return (await s.execute(select(ProxyRow.id).where(ProxyRow.domain == domain.lower()))).first() is not None
