"""What the billing modules' dialect adds to the contract: one-VM tokens and traffic resets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from idcs_core import errors
from idcs_core.db.models import VM, Host
from idcs_core.ops import traffic
from idcs_core.services.lookup import get_vm

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal


@dataclass(frozen=True)
class TempToken:
    """A short-lived token valid for one VM only, and when it ends (epoch seconds)."""

    token: str
    expire: int


@dataclass(frozen=True)
class VMSession:
    """A session limited to one VM, from the exchange of a temporary token."""

    token: str
    server_name: str
    vm_uuid: str


async def issue_temp_token(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str,
                           source_ip: str) -> TempToken:
    """A temporary token for the VM (lifetime: setting ``temp_token_ttl_seconds``), audited."""
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
    ttl = int(core.settings.get("temp_token_ttl_seconds"))
    token, expire = await core.auth.issue(vm.owner_id, source_ip, vm_id=vm.id, ttl=ttl, dialect="billing")
    await core.audit(principal, "vm.temptoken", f"{hs_name}/{vm_uuid}", source_ip=source_ip)
    return TempToken(token, int(expire))


async def exchange_temp_token(core: CoreContext, raw: str, source_ip: str) -> VMSession:
    """Turn a temporary token into a session limited to its VM (once); 1002 if the VM is gone."""
    token, _expire, vm_id = await core.auth.exchange_temp(raw, source_ip)
    async with core.db.session() as s:
        vm = await s.get(VM, vm_id)
        if vm is None:
            raise errors.VMNotFound()
        return VMSession(token, vm.host.server_name, vm.vm_uuid)


async def reset_traffic(core: CoreContext, principal: Principal, hs_name: str | None, vm_uuid: str,
                        source_ip: str) -> str:
    """Set the VM's traffic counter to zero; return its host's name.

    Without ``hs_name`` the VM is found by its id alone; 400 when several hosts have one."""
    async with core.db.session() as s:
        if hs_name is None:
            hosts = list((await s.execute(select(Host.server_name).join(VM, VM.host_id == Host.id)
                                          .where(VM.vm_uuid == vm_uuid))).scalars())
            if not hosts:
                raise errors.VMNotFound(f"virtual machine {vm_uuid} does not exist")
            if len(hosts) > 1:
                raise errors.BadRequest(f"several hosts have a VM {vm_uuid}: give hs_name")
            hs_name = hosts[0]
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        vm_id = vm.id
    await traffic.reset_period(core, vm_id)  # a new period: counted from zero, any throttle lifted
    await core.audit(principal, "vm.traffic-reset", f"{hs_name}/{vm_uuid}", source_ip=source_ip)
    return hs_name
