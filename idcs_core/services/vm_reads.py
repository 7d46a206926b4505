"""Reading VMs: a host's list with live power state, the caller's VMs everywhere, one VM's detail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from idcs_core import errors
from idcs_core.db.models import VM, Disk, Host, IsoMount, NatRuleRow
from idcs_core.ops import traffic
from idcs_core.services.lookup import get_host, get_vm, vm_dict
from idcs_core.services.vms import BUSY_STATES, apply_live, live_fields, reconcile_vm
from idcs_core.types import HostSpec, VMInfo

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal


@dataclass(frozen=True, slots=True)
class ListedVM:
    """One stored VM of a host's list, as read once per database generation: what the caller
    filter and the live merge need, and its API shape (``vm_dict``) built once, so a list does
    not read every ORM attribute of every VM again on every request."""

    id: int
    owner_id: int | None
    vm_uuid: str
    ref: str | None
    status: str
    power_state: str
    shown: dict[str, Any]

    @classmethod
    def of(cls, vm: VM) -> ListedVM:
        return cls(id=vm.id, owner_id=vm.owner_id, vm_uuid=vm.vm_uuid, ref=vm.ref, status=vm.status,
                   power_state=vm.power_state, shown=vm_dict(vm))

    def answer(self, live: dict[str, Any]) -> dict[str, Any]:
        """A fresh copy of the API shape (its ``config`` too), ``live`` fields laid over it."""
        data = dict(self.shown)
        data["config"] = dict(data["config"])
        data.update(live)
        return data


async def list_vms(core: CoreContext, principal: Principal, hs_name: str) -> list[dict[str, Any]]:
    """The host's managed VMs the caller may see, with live power state from one engine call.

    The host's rows, their API shapes and the engine's ``HostSpec`` come from memory until
    something is written (``core.reads``); the engine is asked at once, so a list costs about
    one engine call."""
    stored = await core.reads.get(f"vms:{hs_name}", lambda: _host_vms(core, hs_name))
    all_vms = stored.vms
    if principal.vm_id is not None:
        vms = [vm for vm in all_vms if vm.id == principal.vm_id]
    elif principal.is_admin:
        vms = all_vms
    else:
        vms = [vm for vm in all_vms if vm.owner_id == principal.user_id]
    live: dict[str, VMInfo] = {}
    host_error = ""
    try:
        live = {info.vm_uuid: info for info in await core.engines.vm_list(stored.spec(core))}
    except errors.IDCSError as exc:
        host_error = exc.msg
    changed = []
    result = []
    for vm in vms:
        info = live.get(vm.vm_uuid)
        extra: dict[str, Any] = {}
        if info is not None and ((info.ref and info.ref != vm.ref)  # the engine's ref is new or changed
                                 or (vm.status not in BUSY_STATES
                                     and (vm.status, vm.power_state) != (info.status, info.power_state))):
            changed.append((vm.id, info))  # stored once: apply_live writes the ref and the status together
        if info is not None and vm.status not in BUSY_STATES:
            extra = {"status": info.status, "power_state": info.power_state, "ip_addresses": info.ip_addresses}
        elif host_error:
            extra = {"power_state": "unknown", "host_error": host_error}
        elif vm.status not in BUSY_STATES:
            extra = {"power_state": "missing"}
        result.append(vm.answer(extra))
    for vm_id, info in changed:
        await apply_live(core, vm_id, info)
    return result


async def list_my_vms(core: CoreContext, principal: Principal) -> list[dict[str, Any]]:
    """Every VM the caller may see, on every host, as stored (no engine call): a one-VM
    token sees its VM, a user their own, an administrator all. Each carries ``server_name``."""
    query = select(VM).order_by(VM.id)
    if principal.vm_id is not None:
        query = query.where(VM.id == principal.vm_id)
    elif not principal.is_admin:
        query = query.where(VM.owner_id == principal.user_id)
    async with core.db.session() as s:
        return [vm_dict(vm) for vm in (await s.execute(query)).scalars()]


class HostVMs:
    """A host's stored VMs for its list, kept per database generation, and the engine's
    ``HostSpec`` of the host, built (password decrypted, options coerced) on first use."""

    def __init__(self, host: Host, vms: list[ListedVM]) -> None:
        self.host = host
        self.vms = vms
        self._spec: HostSpec | None = None

    def spec(self, core: CoreContext) -> HostSpec:
        if self._spec is None:
            self._spec = core.host_spec(self.host)
        return self._spec


async def _host_vms(core: CoreContext, hs_name: str) -> HostVMs:
    async with core.db.session() as s:
        host = await get_host(s, hs_name)
        vms = (await s.execute(select(VM).where(VM.host_id == host.id).order_by(VM.id))).scalars()
        return HostVMs(host, [ListedVM.of(vm) for vm in vms])


async def vm_detail(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str) -> dict[str, Any]:
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        extras = await _attachments(s, vm)
    live: dict[str, Any] = {}
    if vm.status in BUSY_STATES and not core.tasks.busy(hs_name, vm_uuid):
        await reconcile_vm(core, vm.id)
    try:
        info = await core.engines.vm_status(vm)
        live = live_fields(info)
        if vm.status in BUSY_STATES:
            live["status"] = vm.status
        else:
            await apply_live(core, vm.id, info)
    except errors.VMNotFound:
        live = {"power_state": "missing"}
    except errors.IDCSError as exc:
        live = {"power_state": "unknown", "host_error": exc.msg}
    return vm_dict(vm, live) | extras | {"traffic_used": await traffic.usage_of(core, vm.id, vm.config)}


async def _attachments(s: Any, vm: VM) -> dict[str, Any]:
    disks = (await s.execute(select(Disk).where(Disk.vm_id == vm.id))).scalars()
    isos = (await s.execute(select(IsoMount).where(IsoMount.vm_id == vm.id))).scalars()
    nat = (await s.execute(select(func.count(NatRuleRow.id)).where(NatRuleRow.vm_id == vm.id))).scalar_one()
    return {"disks": [{"hdd_name": d.name, "hdd_size": d.size_gb, "mounted": d.mounted} for d in disks],
            "isos": [i.iso_name for i in isos], "nat_count": nat}
