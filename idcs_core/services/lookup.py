"""Finding hosts and VMs by their API names, with ownership checks, and their API shapes."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from idcs_core import aliases, errors
from idcs_core.db.models import VM, Host, Task
from idcs_core.engines import VMTarget
from idcs_core.services.auth import Principal
from idcs_core.services.limits import BILLING_LIMITS


class _OfVM(Protocol):
    @property
    def vm_id(self) -> int: ...


R = TypeVar("R", bound=_OfVM)


async def task_record(s: AsyncSession, model: type[R], record_id: int) -> tuple[R, VM] | None:
    """The record a task works on (an address, a proxy rule...) and its VM, or None when the record
    is gone (its row goes with its VM's, so a record has a VM)."""
    row = await s.get(model, record_id)
    if row is None:
        return None
    vm = await s.get(VM, row.vm_id)
    assert vm is not None  # foreign key with ON DELETE CASCADE
    return row, vm


async def get_host(s: AsyncSession, hs_name: str) -> Host:
    host = (await s.execute(select(Host).where(Host.server_name == hs_name))).scalar_one_or_none()
    if host is None:
        raise errors.HostNotFound(f"host {hs_name} does not exist")
    return host


async def get_vm(s: AsyncSession, principal: Principal, hs_name: str, vm_uuid: str,
                 *, for_update: bool = False) -> VM:
    """The VM ``vm_uuid`` on host ``hs_name`` if ``principal`` may act on it.

    Raises 1001 for an unknown host, 1002 for an unknown VM, 403 for someone
    else's VM (or a VM outside a one-VM token's scope).
    """
    host = await get_host(s, hs_name)
    query = select(VM).where(VM.host_id == host.id, VM.vm_uuid == vm_uuid)
    if for_update and s.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=VM)
    vm = (await s.execute(query)).scalar_one_or_none()
    if vm is None:
        raise errors.VMNotFound(f"virtual machine {vm_uuid} does not exist on host {hs_name}")
    check_owner(principal, vm)
    return vm


async def vm_target(s: AsyncSession, host: Host, vm_uuid: str) -> VMTarget:
    """How engines address ``vm_uuid`` on ``host``: its stored ref when the VM has a record
    (a backup may outlive it), else the name alone."""
    ref = (await s.execute(select(VM.ref).where(VM.host_id == host.id, VM.vm_uuid == vm_uuid))).scalar_one_or_none()
    return VMTarget(host, vm_uuid, ref)


def check_owner(principal: Principal, vm: VM) -> None:
    if principal.vm_id is not None:
        if principal.vm_id != vm.id:
            raise errors.Forbidden("this token is limited to another virtual machine")
        return
    if not principal.is_admin and vm.owner_id != principal.user_id:
        raise errors.Forbidden("this virtual machine belongs to another user")


CONFIG_KEYS = ("os_pass_set", "vc_port", "nic_all", *BILLING_LIMITS)


def vm_dict(vm: VM, live: dict[str, Any] | None = None) -> dict[str, Any]:
    """A VM as the API shows it (contract names plus the billing dialect's aliases)."""
    data = {
        "vm_uuid": vm.vm_uuid,
        "vm_name": vm.vm_name or vm.vm_uuid,
        "server_name": vm.host.server_name if vm.host else None,
        "os_name": vm.os_name,
        "cpu_num": vm.cpu_num,
        "ram_num": vm.ram_num,
        aliases.VM["ram_num"]: vm.ram_num,
        "hdd_num": vm.hdd_num,
        "status": vm.status,
        "traffic_bytes": vm.traffic_bytes or 0,
        "power_state": vm.power_state,
        "owner_id": vm.owner_id,
        "config": {k: v for k, v in (vm.config or {}).items()},
        "created_at": vm.created_at,
        "updated_at": vm.updated_at,
    }
    if live:
        data.update(live)
    return data


async def task_vm(s: AsyncSession, task: Task, when: str = "") -> VM:
    """The VM a task works on (``task.params["vm_id"]``); 1002 when its record has gone
    ("the VM record vanished <when>")."""
    vm = await s.get(VM, task.params["vm_id"])
    if vm is None:
        raise errors.VMNotFound(f"the VM record vanished {when}".strip())
    return vm
