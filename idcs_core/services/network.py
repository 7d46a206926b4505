"""A VM's NAT port forwards (IP addresses: ``vm_ips``; reverse proxies: ``reverse_proxies``).

Every rule is reserved in the database first (row + quota, unique constraints
guard host ports and domains), then applied by the engine; if the engine
fails, the reservation is undone. Rules are numbered per VM by a stable
``idx`` (the ``*_index`` of the API), which does not shift when another rule
is removed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from idcs_core import aliases, errors
from idcs_core.aliases import aliased
from idcs_core.db.models import VM, Host, NatRuleRow, Task
from idcs_core.services import limits, quotas
from idcs_core.services.late_hooks import settle_late
from idcs_core.services.lookup import get_host, get_vm
from idcs_core.tasks import NotedProgress, answer_of, task_handler, task_recovery
from idcs_core.types import NatRule, VMStatus

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal
    from idcs_core.tasks import TaskProgress

log = logging.getLogger("idcs.network")


async def _next_idx(s: Any, model: Any, vm_id: int) -> int:
    current = (await s.execute(select(func.max(model.idx)).where(model.vm_id == vm_id))).scalar_one()
    return 0 if current is None else current + 1


def _per_vm_limit(vm: VM, key: str) -> int | None:
    value = (vm.config or {}).get(key)
    try:
        return None if value in (None, "", -1) else int(value)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------- NAT


def nat_dict(rule: NatRuleRow, host: Host) -> dict[str, Any]:
    return aliased({"rule_index": rule.idx, "host_port": rule.host_port, "vm_port": rule.vm_port,
                    "protocol": rule.protocol, "lan_addr": rule.lan_addr, "tips": rule.tips,
                    "public_addr": str((host.options or {}).get("public_addr") or "").split(",")[0]}, aliases.NAT)


# Host ports a normal user may forward when the host sets no ports_start..ports_close:
# above the well-known and registered service ports (ssh 22, this API 1880, ...) and
# below the usual ephemeral range (60000-65535 on many systems, 32768+ on Linux
# ip_local_port_range by default, hence start at 10000 and stop at 59999).
DEFAULT_CUSTOMER_PORTS = (10000, 59999)
# How many free ports an automatic pick tries when the engine says a port is taken
# by something OpenIDCS does not know (another process on the host).
AUTO_PORT_TRIES = 20


def _port_range(host: Host) -> tuple[int, int] | None:
    """The host's own ports_start..ports_close, if it sets a valid one."""
    opts = host.options or {}
    try:
        start, close = int(opts.get("ports_start") or 0), int(opts.get("ports_close") or 0)
    except (TypeError, ValueError):
        return None
    return (start, close) if 0 < start <= close <= 65535 else None


def customer_ports(host: Host) -> tuple[int, int]:
    """Host ports normal users may forward (and automatic picks come from): the host's
    range, else ``DEFAULT_CUSTOMER_PORTS``. Administrators may forward any port."""
    return _port_range(host) or DEFAULT_CUSTOMER_PORTS


async def free_ports(s: Any, host: Host, protocol: str) -> list[int]:
    """Host ports of ``customer_ports`` that no NAT rule uses yet, ascending."""
    low, high = customer_ports(host)
    used = set((await s.execute(select(NatRuleRow.host_port).where(
        NatRuleRow.host_id == host.id, NatRuleRow.protocol == protocol))).scalars())
    return [p for p in range(low, high + 1) if p not in used]


@dataclass(frozen=True)
class HostPorts:
    """A host's NAT port range and public address, and the ports automatic NAT rules may still take."""

    ports_start: Any
    ports_close: Any
    public_addr: str
    free: list[int]


async def host_ports(core: CoreContext, hs_name: str, protocol: str = "tcp") -> HostPorts:
    """The host's configured port range and public address with its free ``protocol`` ports."""
    async with core.db.session() as s:
        host = await get_host(s, hs_name)
        free = await free_ports(s, host, protocol)
    opts = host.options or {}
    return HostPorts(opts.get("ports_start"), opts.get("ports_close"), opts.get("public_addr") or "", free)


def bound_to_range(principal: Principal, host: Host) -> bool:
    """Must this caller's explicit host port lie in the host's range? Users: always. API
    tokens (billing modules): yes, unless the host's option ``token_any_port`` is true.
    Administrators logged in: no."""
    if not principal.is_admin:
        return True
    return principal.profile is not None and (host.options or {}).get("token_any_port") is not True


async def _free_port(s: Any, host: Host, protocol: str, skip: set[int]) -> int:
    port_range = customer_ports(host)
    used = set((await s.execute(select(NatRuleRow.host_port).where(
        NatRuleRow.host_id == host.id, NatRuleRow.protocol == protocol))).scalars())
    for port in range(port_range[0], port_range[1] + 1):
        if port not in used and port not in skip:
            return port
    raise errors.Conflict(f"no free port left in {port_range[0]}-{port_range[1]} on host {host.server_name}")


async def list_nat(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str) -> list[dict[str, Any]]:
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        query = select(NatRuleRow).where(NatRuleRow.vm_id == vm.id).order_by(NatRuleRow.idx)
        rules = (await s.execute(query)).scalars()
        return [nat_dict(r, vm.host) for r in rules]


class _PortTaken(Exception):
    """An automatically picked port was reserved by a parallel request first."""

    def __init__(self, port: int) -> None:
        self.port = port


async def add_nat(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str,
                  fields: dict[str, Any]) -> dict[str, Any]:
    """Forward a host port to the VM. Without ``host_port`` a free port of ``customer_ports``
    is picked; when the engine answers that it is taken on the host (Conflict), the next free
    one is tried, up to ``AUTO_PORT_TRIES`` ports.

    Each try is a task of kind ``nat_add`` (recorded with the rule's reservation, run at once),
    so a try cut short by a crash is settled at the next start (see ``_recover_nat_add``)."""
    protocol = fields["protocol"]
    wanted = fields.get("host_port")
    tried: set[int] = set()
    last: errors.IDCSError | None = None
    for _attempt in range(1 if wanted else AUTO_PORT_TRIES):
        try:
            task_id, port = await _reserve_nat(core, principal, hs_name, vm_uuid, fields, wanted, tried)
        except _PortTaken as race:
            tried.add(race.port)
            continue
        try:
            applied = await core.tasks.run(task_id)
            return answer_of(applied)
        except errors.Conflict as exc:
            if wanted:
                raise
            log.info("host port %s/%s on %s is taken outside OpenIDCS (%s); trying the next free one",
                     port, protocol, hs_name, exc.msg)
            tried.add(port)
            last = exc
    detail = f" (last: {last.msg})" if last else ""
    raise errors.Conflict(f"no usable host port found on host {hs_name} after {AUTO_PORT_TRIES} tries "
                          f"({', '.join(map(str, sorted(tried)))} are taken){detail}: give host_port")


@task_handler("nat_add")
async def _run_nat_add(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    """Apply a reserved rule on the host; if the engine fails, the reservation is undone."""
    async with core.db.session() as s:
        row = await s.get(NatRuleRow, task.params["nat_id"])
        if row is None:
            raise errors.NotFound("the NAT rule was removed before it was applied")
        vm = await s.get(VM, row.vm_id)
        assert vm is not None  # the rule's row goes with its VM's
        host, rule = vm.host, nat_rule(row)
    noted = NotedProgress(progress)
    try:
        applied: NatRule | None = await core.engines.nat_add(vm, rule, noted)
    except errors.IDCSError as exc:
        await _drop_nat_row(core, row.id, vm.owner_id)
        settle_late(core, exc, f"NAT rule {_rule_text(row)} added to {host.server_name}/{vm.vm_uuid}",
                    lambda _late: _remove_late_forward(core, vm, rule))
        raise
    async with core.db.session() as s:
        row = await s.get(NatRuleRow, row.id)
        if row is None:
            raise errors.NotFound("the NAT rule was removed while it was being applied")
        if applied is not None and applied.lan_addr and not row.lan_addr:
            row.lan_addr = applied.lan_addr
        return nat_dict(row, host) | {"message": noted.final(_rule_text(row))}


# Recovery rule of an interrupted NAT add. The caller never had an answer (the call waits for its
# task), and a billing module retries what did not answer, so the try is undone, whether or not the
# engine had applied it: the forward is removed from the host (nat_remove is idempotent), the
# reservation and its quota are given back, and the task fails saying so. A retry then finds the port free.
@task_recovery("nat_add")
async def _recover_nat_add(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    async with core.db.session() as s:
        row = await s.get(NatRuleRow, task.params["nat_id"])
        if row is None:
            raise errors.NotFound("the server stopped while this NAT rule was being added, and its record is gone")
        vm = await s.get(VM, row.vm_id)
        assert vm is not None
        rule, text = nat_rule(row), _rule_text(row)
    try:
        await core.engines.nat_remove(vm, rule, progress)
    except errors.VMNotFound:
        pass  # the VM (and so its forwards) is gone
    except errors.HostUnreachable:
        raise  # tried again once the host answers
    except errors.IDCSError as exc:  # it may be on the host: the record stays, so it can be deleted
        raise errors.VMOperationFailed(f"the server stopped while NAT rule {text} was being added, and it could not "
                                       f"be taken off the host ({exc.msg}): the rule is kept; delete it if unwanted"
                                       ) from exc
    await _drop_nat_row(core, row.id, vm.owner_id)
    raise errors.VMOperationFailed(f"the server stopped while NAT rule {text} was being added: it was taken off "
                                   "the host and its reservation released; add it again")


def nat_rule(row: NatRuleRow) -> NatRule:
    """The engines' form of a stored NAT rule."""
    return NatRule(row.host_port, row.vm_port, row.protocol, row.lan_addr)


def _rule_text(row: NatRuleRow) -> str:
    return f"{row.host_port}->{row.vm_port}/{row.protocol}"


async def _drop_nat_row(core: CoreContext, row_id: int, owner_id: int | None) -> None:
    async with core.db.session() as s:
        row = await s.get(NatRuleRow, row_id)
        if row is not None:
            await s.delete(row)
            await quotas.charge(s, owner_id, nat=-1)


async def _reserve_nat(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str,
                       fields: dict[str, Any], wanted: int | None, skip: set[int]) -> tuple[str, int]:
    """Check the request and record the rule (row + quota) with its ``nat_add`` task: (task id, host port)."""
    protocol = fields["protocol"]
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        host = vm.host
        core.require(host, "nat_add", "NAT port forwarding")
        if vm.status in (VMStatus.CREATING, VMStatus.DELETING):
            raise errors.Conflict(f"virtual machine {vm_uuid} is busy ({vm.status}); try again when it is done")
        await limits.check_lan_addr(core, s, principal, vm, fields.get("lan_addr"))
        allowed = customer_ports(host)
        if wanted and bound_to_range(principal, host) and not allowed[0] <= wanted <= allowed[1]:
            where = "on this host" if _port_range(host) else "(the host sets no ports_start..ports_close)"
            raise errors.BadRequest(f"host_port must lie in {allowed[0]}-{allowed[1]} {where}")
        limit = _per_vm_limit(vm, "nat_num")
        count = (await s.execute(select(func.count(NatRuleRow.id)).where(NatRuleRow.vm_id == vm.id))).scalar_one()
        if limit is not None and count >= limit:
            raise errors.QuotaExceeded(f"this VM may have at most {limit} NAT rules")
        port = wanted or await _free_port(s, host, protocol, skip)
        taken = (await s.execute(select(NatRuleRow.id).where(
            NatRuleRow.host_id == host.id, NatRuleRow.protocol == protocol, NatRuleRow.host_port == port))).first()
        if taken:
            raise errors.Conflict(f"host port {port}/{protocol} is already forwarded on host {hs_name}")
        await quotas.charge(s, vm.owner_id, nat=1)
        row = NatRuleRow(vm_id=vm.id, host_id=host.id, idx=await _next_idx(s, NatRuleRow, vm.id), host_port=port,
                         vm_port=fields["vm_port"], protocol=protocol, lan_addr=fields.get("lan_addr") or "",
                         tips=fields.get("tips") or "")
        s.add(row)
        try:
            await s.flush()
        except IntegrityError as exc:
            if not wanted:
                raise _PortTaken(port) from exc
            raise errors.Conflict(f"host port {port}/{protocol} is already forwarded on host {hs_name}") from exc
        task = core.tasks.add(s, "nat_add", host_name=hs_name, vm_uuid=vm_uuid, user_id=principal.user_id,
                              params={"nat_id": row.id})
        return task.id, port


async def delete_nat(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str, idx: int) -> None:
    """Remove a rule from the host, then its record: a task of kind ``nat_delete``, run at once."""
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        query = select(NatRuleRow).where(NatRuleRow.vm_id == vm.id, NatRuleRow.idx == idx)
        row = (await s.execute(query)).scalar_one_or_none()
        if row is None:
            raise errors.NotFound(f"NAT rule {idx} does not exist on {vm_uuid}")
        task = core.tasks.add(s, "nat_delete", host_name=hs_name, vm_uuid=vm_uuid, user_id=principal.user_id,
                              params={"nat_id": row.id})
    await core.tasks.run(task.id)


@task_handler("nat_delete")
async def _run_nat_delete(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    async with core.db.session() as s:
        row = await s.get(NatRuleRow, task.params["nat_id"])
        if row is None:
            return {"message": "the rule was already gone"}
        vm = await s.get(VM, row.vm_id)
        assert vm is not None
        rule, text = nat_rule(row), _rule_text(row)
    noted = NotedProgress(progress)
    try:
        await core.engines.nat_remove(vm, rule, noted)
    except errors.IDCSError as exc:  # a removal that ends late has done what was asked: forget the rule then
        row_id, owner = row.id, vm.owner_id
        settle_late(core, exc, f"NAT rule {text} removed from {vm.host.server_name}/{vm.vm_uuid}",
                    lambda _late: _drop_nat_row(core, row_id, owner))
        raise
    await _drop_nat_row(core, row.id, vm.owner_id)
    return {"message": noted.final(f"{text} removed")}


async def _remove_late_forward(core: CoreContext, vm: VM, rule: NatRule) -> None:
    """A forward the engine made after its add had failed (and its reservation was given back) is
    taken off the host, unless the port has been recorded again since (for this VM or another):
    then the forward belongs to that newer rule."""
    async with core.db.session() as s:
        again = (await s.execute(select(NatRuleRow.id).where(
            NatRuleRow.host_id == vm.host_id, NatRuleRow.host_port == rule.host_port,
            NatRuleRow.protocol == rule.protocol))).first()
    if again is None:
        await core.engines.nat_remove(vm, rule, lambda _p, _m="": None)


# Recovery rule of an interrupted NAT removal: the user asked for the rule to go, so the removal is
# finished (nat_remove is idempotent; a VM that is gone has no forwards) and the task succeeds.
@task_recovery("nat_delete")
async def _recover_nat_delete(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    try:
        return await _run_nat_delete(core, task, progress)
    except errors.VMNotFound:
        async with core.db.session() as s:
            row = await s.get(NatRuleRow, task.params["nat_id"])
            owner = (await s.get(VM, row.vm_id)).owner_id if row is not None else None  # type: ignore[union-attr]
        await _drop_nat_row(core, task.params["nat_id"], owner)
        return {"message": "the VM is gone, and so is the rule"}


async def sync_nat(core: CoreContext, host_name: str | None = None) -> None:
    """Hand each idle VM's NAT rules (the records) to its engine's ``nat_sync``.

    Run at start-up and when a host comes back online, for engines whose forwards do
    not survive a host reboot (nftables, iptables); hosts whose engine lacks the hook
    are skipped, and a host that fails is logged and left for its next reconnection.
    """
    work: list[tuple[VM, list[NatRule]]] = []
    async with core.db.session() as s:
        query = select(Host) if host_name is None else select(Host).where(Host.server_name == host_name)
        for host in (await s.execute(query)).scalars():
            if not core.supports(host, "nat_sync"):
                continue
            vms = (await s.execute(select(VM).where(VM.host_id == host.id, VM.status.not_in(
                (VMStatus.CREATING, VMStatus.DELETING))))).scalars()
            rows = (await s.execute(select(NatRuleRow).where(NatRuleRow.host_id == host.id))).scalars()
            rules: dict[int, list[NatRule]] = {}
            for r in rows:
                rules.setdefault(r.vm_id, []).append(nat_rule(r))
            work += [(vm, rules.get(vm.id, [])) for vm in vms
                     if not core.tasks.busy(host.server_name, vm.vm_uuid)]  # a task (or its recovery) owns it
    for vm, vm_rules in work:
        try:
            await core.engines.nat_sync(vm, vm_rules)
        except errors.IDCSError as exc:
            log.warning("NAT rules of %s/%s not re-applied: %s", vm.host.server_name, vm.vm_uuid, exc.msg)


async def port_in_use(core: CoreContext, hs_name: str | None, port: int, protocol: str) -> bool:
    async with core.db.session() as s:
        query = select(NatRuleRow.id).join(Host, Host.id == NatRuleRow.host_id).where(
            NatRuleRow.host_port == port, NatRuleRow.protocol == protocol)
        if hs_name:
            query = query.where(Host.server_name == hs_name)
        return (await s.execute(query.limit(1))).first() is not None
