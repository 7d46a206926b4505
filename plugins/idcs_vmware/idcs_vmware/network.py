"""The VM's NICs and address, and NAT port forwarding on the host's vmnet, owned per VM.

A forward OpenIDCS makes carries ``desc = "idcs:<vm_uuid>"``: that is how a VM's forwards are
told apart from the host's other ones (removed, synced and conflict-checked per VM).
"""

from __future__ import annotations

import contextlib
from typing import Any

from idcs_core import errors
from idcs_core.enginekit import normalise_nat_rule
from idcs_core.types import IPAddress, NatRule
from idcs_vmware.client import Vmrest, host_lock
from idcs_vmware.errors import VmrestError, business
from idcs_vmware.lifecycle import resolve
from idcs_vmware.naming import owner_tag


async def _nics(api: Vmrest, vm_id: str) -> list[dict[str, Any]]:
    answer = await api.get(f"/api/vms/{vm_id}/nic")
    return list((answer or {}).get("nics") or [])


async def guest_address(api: Vmrest, vm_uuid: str, vm_id: str) -> str:
    """The guest's IPv4 address: what its tools report, else its DHCP lease on the NAT vmnet."""
    with contextlib.suppress(VmrestError):
        answer = await api.get(f"/api/vms/{vm_id}/ip")
        if isinstance(answer, dict) and answer.get("ip"):
            return str(answer["ip"])
    vmnet = api.settings.vmnet
    macs = {str(n.get("macAddress", "")).lower() for n in await _nics(api, vm_id) if n.get("vmnet") == vmnet}
    leases = await api.get(f"/api/vmnet/{vmnet}/mactoip")
    for row in (leases or {}).get("mactoips") or []:
        if str(row.get("mac", "")).lower() in macs and row.get("ip"):
            return str(row["ip"])
    raise errors.VMOperationFailed(f"{vm_uuid} has no address on {vmnet} yet (no tools report and no DHCP lease)")


async def ip_list(api: Vmrest, vm_uuid: str, ref: str | None) -> list[IPAddress]:
    """The VM's NICs (``GET /nic``) with the address vmrest reports (``GET /ip``) on the first."""
    vm_id = await resolve(api, vm_uuid, ref)
    try:
        nics = await _nics(api, vm_id)
    except VmrestError as exc:
        raise business(exc, f"NICs of {vm_uuid}") from None
    if not nics:
        return []
    try:
        address = await guest_address(api, vm_uuid, vm_id)
    except errors.VMOperationFailed:
        return []
    first = nics[0]
    return [IPAddress(address=address, version=4, nic=f"ethernet{int(first.get('index', 1)) - 1}",
                      mac_addr=str(first.get("macAddress", "")), extra={"vmnet": first.get("vmnet", "")})]


async def forwards(api: Vmrest) -> dict[tuple[str, int], dict[str, Any]]:
    """The vmnet's forwards keyed by (protocol, host port)."""
    answer = await api.get(f"/api/vmnet/{api.settings.vmnet}/portforward")
    return {(str(f["protocol"]).lower(), int(f["port"])): f for f in (answer or {}).get("port_forwardings") or []}


async def nat_add(api: Vmrest, vm_uuid: str, ref: str | None, rule: NatRule) -> NatRule:
    """``PUT /api/vmnet/{vmnet}/portforward/{protocol}/{port}`` to the guest's address."""
    rule = normalise_nat_rule(rule)
    async with host_lock(api.host):  # check-then-PUT: vmrest's PUT would replace another's forward
        return await _nat_add(api, vm_uuid, ref, rule)


async def _nat_add(api: Vmrest, vm_uuid: str, ref: str | None, rule: NatRule) -> NatRule:
    """``rule`` (normalised) forwarded to the VM, under the host's lock."""
    vm_id = await resolve(api, vm_uuid, ref)
    protocol = rule.protocol
    try:
        existing = (await forwards(api)).get((protocol, rule.host_port))
        address = await guest_address(api, vm_uuid, vm_id)
    except VmrestError as exc:
        raise business(exc, f"forward port {rule.host_port} to {vm_uuid}") from None
    if existing is not None:
        guest = existing.get("guest") or {}
        if existing.get("desc") == owner_tag(vm_uuid) and (guest.get("ip"), guest.get("port")) == \
                (address, rule.vm_port):
            return NatRule(rule.host_port, rule.vm_port, protocol, lan_addr=address)
        raise errors.Conflict(f"{protocol} port {rule.host_port} of the host is already forwarded "
                              f"({existing.get('desc') or 'not by OpenIDCS'})")
    try:
        await api.put(f"/api/vmnet/{api.settings.vmnet}/portforward/{protocol}/{rule.host_port}",
                      {"guestIp": address, "guestPort": rule.vm_port, "desc": owner_tag(vm_uuid)})
    except VmrestError as exc:
        if exc.status == 409:
            raise errors.Conflict(f"{protocol} port {rule.host_port} of the host is taken: {exc.message}") from None
        raise business(exc, f"forward port {rule.host_port} to {vm_uuid}") from None
    return NatRule(rule.host_port, rule.vm_port, protocol, lan_addr=address)


async def nat_remove(api: Vmrest, vm_uuid: str, rule: NatRule) -> None:
    """Delete the forward if it is this VM's; gone (or someone else's) is left as it is."""
    protocol = rule.protocol.lower()
    try:
        async with host_lock(api.host):
            existing = (await forwards(api)).get((protocol, rule.host_port))
            if existing is None or existing.get("desc") != owner_tag(vm_uuid):
                return
            await api.delete(f"/api/vmnet/{api.settings.vmnet}/portforward/{protocol}/{rule.host_port}")
    except VmrestError as exc:
        if exc.status != 404:
            raise business(exc, f"remove port {rule.host_port} of {vm_uuid}") from None


async def nat_sync(api: Vmrest, vm_uuid: str, ref: str | None, rules: list[NatRule]) -> None:
    """Make the VM's forwards exactly ``rules``: drop its others, add the missing ones."""
    wanted = {(r.protocol, r.host_port): r for r in map(normalise_nat_rule, rules)}
    async with host_lock(api.host):
        try:
            current = await forwards(api)
            for key, fwd in current.items():
                if fwd.get("desc") == owner_tag(vm_uuid) and key not in wanted:
                    await api.delete(f"/api/vmnet/{api.settings.vmnet}/portforward/{key[0]}/{key[1]}")
        except VmrestError as exc:
            raise business(exc, f"sync the forwards of {vm_uuid}") from None
        for rule in wanted.values():
            await _nat_add(api, vm_uuid, ref, rule)


async def remove_all(api: Vmrest, vm_uuid: str) -> None:
    """Drop every forward of the VM (before it is deleted)."""
    with contextlib.suppress(VmrestError):
        for (protocol, port), fwd in (await forwards(api)).items():
            if fwd.get("desc") == owner_tag(vm_uuid):
                await api.delete(f"/api/vmnet/{api.settings.vmnet}/portforward/{protocol}/{port}")


async def owned_forwards(api: Vmrest, vm_uuid: str) -> list[dict[str, Any]]:
    """The VM's forwards as vmrest lists them."""
    return [f for f in (await forwards(api)).values() if f.get("desc") == owner_tag(vm_uuid)]


async def repoint(api: Vmrest, vm_uuid: str, vm_id: str, kept: list[dict[str, Any]]) -> None:
    """Send ``kept`` forwards to the VM's current address (after a reinstall gave it a new one)."""
    address = await guest_address(api, vm_uuid, vm_id)
    for fwd in kept:
        await api.put(f"/api/vmnet/{api.settings.vmnet}/portforward/{fwd['protocol']}/{fwd['port']}",
                      {"guestIp": address, "guestPort": int((fwd.get("guest") or {}).get("port", 0)),
                       "desc": owner_tag(vm_uuid)})
