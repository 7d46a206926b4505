"""What a caller may ask for, checked before anything is recorded or sent to an engine.

- Per-VM maxima an operator sets (``max_vm_cpu_num``, ``max_vm_ram_num`` in MB,
  ``max_vm_hdd_num`` in GB): they hold for EVERY caller, administrators and the global API
  token included, since no host should be asked for a 1 PB disk by a typo or a script.
- Hosts a user may create VMs on: granted explicitly by an administrator (``host_grants``);
  administrators and the global API token may use every host.
- Reverse-proxy domains: a customer never gets a domain another user's proxy uses (nor a
  parent or sub-domain of it), and, when the operator sets ``proxy_domain_suffixes``, only
  names under one of those suffixes.
- NAT and proxy ``lan_addr``: a customer may only point at their own VM's addresses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from idcs_core import errors
from idcs_core.db.models import VM, Host, HostGrant, IPAddr, ProxyRow
from idcs_core.services.audit import recorded

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal

# The billing dialect's per-VM limits kept in a VM's config (CPU share, GPU, bandwidth, traffic,
# NAT and proxy counts): the one list the schema, the VM answer and the admin-only check share.
BILLING_LIMITS = ("cpu_per", "gpu_num", "gpu_mem", "speed_u", "speed_d", "flu_num", "nat_num", "web_num")

VM_MAXIMA = {"cpu_num": ("max_vm_cpu_num", "CPU cores"), "ram_num": ("max_vm_ram_num", "MB of RAM"),
             "hdd_num": ("max_vm_hdd_num", "GB of disk")}


def check_vm_size(core: CoreContext, fields: dict[str, Any]) -> None:
    """400 when ``cpu_num``/``ram_num``/``hdd_num`` in ``fields`` exceed the operator's per-VM maxima."""
    for field, (setting, unit) in VM_MAXIMA.items():
        value = fields.get(field)
        limit = int(core.settings.get(setting))
        if value is not None and int(value) > limit:
            raise errors.BadRequest(f"{field}: at most {limit} {unit} per virtual machine on this installation "
                                    f"(setting {setting})")


def check_disk_size(core: CoreContext, size_gb: int) -> None:
    limit = int(core.settings.get("max_vm_hdd_num"))
    if size_gb > limit:
        raise errors.BadRequest(f"hdd_size: at most {limit} GB per disk on this installation (setting max_vm_hdd_num)")


async def require_host_grant(s: AsyncSession, principal: Principal, host: Host) -> None:
    """403 unless the caller may create VMs on ``host``: administrators and the global API token
    may use every host (also for VMs they make for a customer); a customer needs a grant."""
    if principal.is_admin:
        return
    granted = principal.user_id is not None and (await s.execute(select(HostGrant.host_id).where(
        HostGrant.user_id == principal.user_id, HostGrant.host_id == host.id))).first() is not None
    if not granted:
        raise errors.Forbidden(f"host {host.server_name} has not been granted to you "
                               "(an administrator grants hosts: POST /api/users/<id>/hosts/<hs_name>)")


def _related(domain: str, other: str) -> bool:
    return domain == other or domain.endswith("." + other) or other.endswith("." + domain)


async def check_proxy_domain(core: CoreContext, s: AsyncSession, principal: Principal, vm: VM, domain: str) -> None:
    """A customer's proxy domain: under an allowed suffix (if the operator set some) and not
    equal to, above or below a domain that another user's (or no user's) VM uses."""
    if principal.is_admin:
        return
    suffixes = [x for x in str(core.settings.get("proxy_domain_suffixes") or "").split(",") if x]
    if suffixes and not any(domain.endswith("." + x) for x in suffixes):
        raise errors.Forbidden(f"domain must end with {' or '.join('.' + x for x in suffixes)}")
    labels = domain.split(".")
    parents = [".".join(labels[i:]) for i in range(len(labels) - 1)]
    query = (select(ProxyRow.domain, VM.owner_id).join(VM, VM.id == ProxyRow.vm_id)
             .where(or_(ProxyRow.domain.in_(parents), ProxyRow.domain.like("%." + domain))))
    for other, owner in (await s.execute(query)).all():
        if _related(domain, other) and owner != vm.owner_id:
            raise errors.Forbidden(f"domain {domain} belongs to another user's site ({other})")


async def check_lan_addr(core: CoreContext, s: AsyncSession, principal: Principal, vm: VM,
                         lan_addr: str | None) -> None:
    """A customer may forward only to their own VM's addresses (empty: the engine picks the VM's):
    the addresses recorded for it, else the ones its engine reports now."""
    if not lan_addr or principal.is_admin:
        return
    own = {a for row in (await s.execute(select(IPAddr.address, IPAddr.ip6_addr).where(IPAddr.vm_id == vm.id)))
           for a in row if a}
    own |= {a.split("/")[0] for a in own}
    if lan_addr in own:
        return
    if core.supports(vm.host, "vm_status"):
        try:
            info = await core.engines.vm_status(vm)
            own |= {a.split("/")[0] for a in info.ip_addresses}
        except errors.IDCSError:
            pass  # the host does not answer: only the recorded addresses count
    if lan_addr not in own:
        raise errors.Forbidden(f"lan_addr {lan_addr} is not an address of this virtual machine "
                               f"(its addresses: {', '.join(sorted(own)) or 'none known'})")


async def grant_host(core: CoreContext, principal: Principal, user_id: int, hs_name: str) -> None:
    """Let the user create VMs on the host (granting twice is harmless)."""
    from idcs_core.services.lookup import get_host
    from idcs_core.services.users import get_user

    async with recorded(core, principal, "user.grant-host", f"{user_id}/{hs_name}"), core.db.session() as s:
        await get_user(s, user_id)
        host = await get_host(s, hs_name)
        exists = await s.get(HostGrant, (user_id, host.id))
        if exists is None:
            s.add(HostGrant(user_id=user_id, host_id=host.id))


async def revoke_host(core: CoreContext, principal: Principal, user_id: int, hs_name: str) -> None:
    """Take a grant back: the user's existing VMs there stay; new ones are refused."""
    from idcs_core.services.lookup import get_host
    from idcs_core.services.users import get_user

    async with recorded(core, principal, "user.revoke-host", f"{user_id}/{hs_name}"), core.db.session() as s:
        await get_user(s, user_id)
        host = await get_host(s, hs_name)
        grant = await s.get(HostGrant, (user_id, host.id))
        if grant is None:
            raise errors.NotFound(f"host {hs_name} is not granted to user {user_id}")
        await s.delete(grant)


async def granted_hosts(core: CoreContext, user_id: int) -> list[str]:
    from idcs_core.services.users import get_user

    async with core.db.session() as s:
        await get_user(s, user_id)
        rows = await s.execute(select(Host.server_name).join(HostGrant, HostGrant.host_id == Host.id)
                               .where(HostGrant.user_id == user_id).order_by(Host.server_name))
        return [name for (name,) in rows]
