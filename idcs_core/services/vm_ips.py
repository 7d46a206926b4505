"""A VM's IP addresses: adding and removing one are tasks of kinds ``ip_add`` and ``ip_delete``
(audited as ``ip.add`` / ``ip.delete`` when they end).

Adding: the request checks who may choose what and that a chosen address is free on the host, then
records the address (``IPAddr`` row, the owner's ``ips`` quota) with its task; the engine's answer
(the address it gave) is stored on the row when it returns; if the engine fails, the reservation is
undone. Removing: the engine removes the address, then the row and the quota go.

- A hook that answers after its timeout (``late_hooks``): an address added late, after its
  reservation was undone, is removed from the VM again; an address removed late has its row and
  quota dropped.
- A task left running by a dead process: an interrupted add is undone (the caller had no answer and
  a billing module retries what did not answer): the address is removed from the VM when it is known
  (chosen by the caller, or answered by the engine before the stop), the reservation goes, and the
  task fails saying so. An interrupted removal is finished (removing is idempotent) and succeeds.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from idcs_core import aliases, errors
from idcs_core.aliases import aliased
from idcs_core.db.models import VM, IPAddr, Task
from idcs_core.services import quotas
from idcs_core.services.late_hooks import settle_late
from idcs_core.services.lookup import get_vm, task_record
from idcs_core.services.network import _next_idx
from idcs_core.tasks import answer_of, task_handler, task_recovery
from idcs_core.types import IPAddress

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal
    from idcs_core.tasks import TaskProgress

log = logging.getLogger("idcs.network")
REQUEST_KEYS = ("nic_type", "ip4_addr", "ip6_addr", "mac_addr", "tips")  # what the engine's vm_ip_add receives


def ip_dict(row: IPAddr) -> dict[str, Any]:
    is_public = row.nic_type == "pub"
    return aliased({"ip_index": row.idx, "address": row.address, "ip6_addr": row.ip6_addr, "nic_type": row.nic_type,
                    "mac_addr": row.mac_addr, "tips": row.tips, "managed": True,
                    "public_ipv4": row.address if is_public else "",
                    "public_ipv6": row.ip6_addr if is_public else ""}, aliases.IP)


def _address(row: IPAddr) -> IPAddress:
    """The engines' form of a stored address."""
    return IPAddress(row.address or row.ip6_addr, 6 if not row.address else 4, (row.extra or {}).get("nic", ""),
                     row.mac_addr)


async def list_ips(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str) -> list[dict[str, Any]]:
    """Addresses OpenIDCS assigned (with an ``ip_index``) and those the engine reports."""
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        rows = list((await s.execute(select(IPAddr).where(IPAddr.vm_id == vm.id).order_by(IPAddr.idx))).scalars())
    result = [ip_dict(r) for r in rows]
    known = {r.address for r in rows} | {r.ip6_addr for r in rows}
    if core.supports(vm.host, "vm_ip_list"):
        live: list[IPAddress] = await core.engines.vm_ip_list(vm)
        for ip in live:
            if ip.address in known:
                continue
            result.append({"ip_index": None, "address": ip.address,
                           "ip4_addr": ip.address if ip.version == 4 else "",
                           "ip6_addr": ip.address if ip.version == 6 else "", "nic_type": ip.nic or "",
                           "mac_addr": ip.mac_addr, "tips": "", "nic_tips": "", "managed": False,
                           "public_ipv4": "", "public_ipv6": ""})
    return result


async def add_ip(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str,
                 fields: dict[str, Any]) -> dict[str, Any]:
    """Give the VM an address: recorded with its ``ip_add`` task, which the call waits for."""
    chosen = {k: fields[k] for k in ("ip4_addr", "ip6_addr", "mac_addr") if fields.get(k)}
    if chosen and not principal.is_admin:
        raise errors.Forbidden(f"only administrators choose addresses ({', '.join(sorted(chosen))}); "
                               "leave them out and the host assigns one")
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        core.require(vm.host, "vm_ip_add", "adding IP addresses")
        for column, key in ((IPAddr.address, "ip4_addr"), (IPAddr.ip6_addr, "ip6_addr"), (IPAddr.mac_addr, "mac_addr")):
            if key in chosen and (await s.execute(select(IPAddr.id).join(VM, VM.id == IPAddr.vm_id).where(
                    VM.host_id == vm.host_id, column == chosen[key]))).first():
                raise errors.Conflict(f"{key} {chosen[key]} is already given to a VM on host {hs_name}")
        await quotas.charge(s, vm.owner_id, ips=1)
        row = IPAddr(vm_id=vm.id, idx=await _next_idx(s, IPAddr, vm.id), nic_type=fields.get("nic_type") or "nat",
                     address=fields.get("ip4_addr") or "", ip6_addr=fields.get("ip6_addr") or "",
                     mac_addr=fields.get("mac_addr") or "", tips=fields.get("tips") or "")
        s.add(row)
        await s.flush()
        request = {k: fields.get(k) for k in REQUEST_KEYS if k in fields}
        task = core.tasks.add(s, "ip_add", host_name=hs_name, vm_uuid=vm_uuid, user_id=principal.user_id,
                              params={"ip_id": row.id, "request": request})
    result = await core.tasks.run(task.id)
    return answer_of(result)


async def _target(core: CoreContext, task: Task) -> tuple[IPAddr, VM] | None:
    """The task's address record and its VM, or None when the record is gone."""
    async with core.db.session() as s:
        return await task_record(s, IPAddr, task.params["ip_id"])


async def _drop(core: CoreContext, row_id: int, owner_id: int | None) -> None:
    """Remove the address's record and give back its quota."""
    async with core.db.session() as s:
        row = await s.get(IPAddr, row_id)
        if row is not None:
            await s.delete(row)
            await quotas.charge(s, owner_id, ips=-1)


@task_handler("ip_add")
async def _run_ip_add(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    target = await _target(core, task)
    if target is None:
        raise errors.NotFound("the address was removed before it was added")
    row, vm = target
    progress(10, f"adding a {row.nic_type} address to {vm.vm_uuid}")
    try:
        ip: IPAddress = await core.engines.vm_ip_add(vm, dict(task.params.get("request") or {}))
    except errors.IDCSError as exc:
        await _drop(core, row.id, vm.owner_id)
        settle_late(core, exc, f"address added to {vm.host.server_name}/{vm.vm_uuid}",
                    lambda late: _remove_late(core, vm, late))
        raise
    async with core.db.session() as s:
        stored = await s.get(IPAddr, row.id)
        if stored is None:
            raise errors.NotFound("the address was removed while it was being added")
        if ip.version == 6:
            stored.ip6_addr = ip.address
        else:
            stored.address = ip.address
        stored.mac_addr = ip.mac_addr or stored.mac_addr
        stored.extra = {"nic": ip.nic, **ip.extra}
        return ip_dict(stored) | {"message": f"address {ip.address} added"}


async def _remove_late(core: CoreContext, vm: VM, late: Any) -> None:
    """An address the engine gave after its task failed (and its reservation went): removed again."""
    if isinstance(late, IPAddress) and late.address:
        await core.engines.vm_ip_remove(vm, late)
        log.warning("address %s given to %s after its task timed out: removed again", late.address, vm.vm_uuid)


# Recovery rule of an interrupted address add: see the module's docstring (undone, the task fails).
@task_recovery("ip_add")
async def _recover_ip_add(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    target = await _target(core, task)
    if target is None:
        raise errors.NotFound("the server stopped while this address was being added, and its record is gone")
    row, vm = target
    known = row.address or row.ip6_addr
    if known:
        try:
            await core.engines.vm_ip_remove(vm, _address(row))
        except errors.VMNotFound:
            pass  # the VM (and so its addresses) is gone
        except errors.HostUnreachable:
            raise  # tried again once the host answers
        except errors.IDCSError as exc:  # it may be on the VM: the record stays, so it can be removed
            raise errors.VMOperationFailed(f"the server stopped while address {known} was being added, and it "
                                           f"could not be taken off the VM ({exc.msg}): the record is kept; "
                                           "remove it if unwanted") from exc
    await _drop(core, row.id, vm.owner_id)
    if known:
        raise errors.VMOperationFailed(f"the server stopped while address {known} was being added: it was taken "
                                       "off the VM and its reservation released; add it again")
    raise errors.VMOperationFailed("the server stopped while an address chosen by the host was being added: its "
                                   "reservation was released (check the VM's unmanaged addresses); add it again")


async def delete_ip(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str, idx: int) -> None:
    """Remove an address OpenIDCS added: an ``ip_delete`` task, waited on."""
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        row = (await s.execute(select(IPAddr).where(IPAddr.vm_id == vm.id, IPAddr.idx == idx))).scalar_one_or_none()
        if row is None:
            raise errors.NotFound(f"IP address {idx} does not exist on {vm_uuid} (only managed addresses can go)")
        task = core.tasks.add(s, "ip_delete", host_name=hs_name, vm_uuid=vm_uuid, user_id=principal.user_id,
                              params={"ip_id": row.id})
    await core.tasks.run(task.id)


@task_handler("ip_delete")
async def _run_ip_delete(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    target = await _target(core, task)
    if target is None:
        return {"message": "the address was already gone"}
    row, vm = target
    address = _address(row)
    progress(10, f"removing address {address.address} from {vm.vm_uuid}")
    try:
        await core.engines.vm_ip_remove(vm, address)
    except errors.IDCSError as exc:
        settle_late(core, exc, f"address {address.address} removed from {vm.host.server_name}/{vm.vm_uuid}",
                    lambda _result: _drop(core, row.id, vm.owner_id))
        raise
    await _drop(core, row.id, vm.owner_id)
    return {"message": f"address {address.address} removed"}


# Recovery rule of an interrupted address removal: the user asked for it to go and removing is idempotent,
# so it is finished and the task succeeds; a VM gone from the host has no addresses (the record goes too).
@task_recovery("ip_delete")
async def _recover_ip_delete(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    try:
        return await _run_ip_delete(core, task, progress)
    except errors.VMNotFound:
        target = await _target(core, task)
        if target is not None:
            await _drop(core, target[0].id, target[1].owner_id)
        return {"message": "the VM is gone, and so is the address"}
