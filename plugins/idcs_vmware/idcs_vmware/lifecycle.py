"""VMs: list, status, create (clone a template VM), update CPU/RAM, delete, power."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

from idcs_core import errors
from idcs_core.types import PowerAction, Progress, VMInfo, VMSpec, VMStatus
from idcs_vmware.client import Vmrest, host_lock
from idcs_vmware.errors import VmrestError, business
from idcs_vmware.naming import is_template, looks_like_id, vm_name

STATUS = {"poweredOn": VMStatus.RUNNING, "poweredOff": VMStatus.STOPPED,
          "suspended": VMStatus.PAUSED, "paused": VMStatus.PAUSED}
TEMPLATE_PARAM = "idcs.template"  # the template a VM was cloned from (its os_name)


async def resolve(api: Vmrest, vm_uuid: str, ref: str | None) -> str:
    """The vmrest id of the VM: ``ref`` when it is one, else the host's index (one list on a miss)."""
    if looks_like_id(ref):
        return str(ref)
    found = api.index.lookup(vm_uuid)
    if found is None:
        await api.list_vms()
        found = api.index.require(vm_uuid)
    return found


async def power_state(api: Vmrest, vm_id: str) -> str:
    answer = await api.get(f"/api/vms/{vm_id}/power")
    return str(answer.get("power_state", "")) if isinstance(answer, dict) else ""


def _info(vm_uuid: str, vm_id: str, state: str, **extra: Any) -> VMInfo:
    return VMInfo(vm_uuid=vm_uuid, status=STATUS.get(state, VMStatus.STOPPED), power_state=state,
                  vm_name=vm_uuid, ref=vm_id, **extra)


async def list_vms(api: Vmrest) -> list[VMInfo]:
    """Every VM but the templates: one ``GET /api/vms``, then every power state at once.

    vmrest has no batch read of power states, so they are asked concurrently over the
    host's keep-alive pool: one round of latency whatever the number of VMs."""
    listing = await api.list_vms()
    prefix = api.settings.template_prefix
    vms = [(vm_name(v["path"]), v["id"]) for v in listing if not is_template(vm_name(v["path"]), prefix)]
    states = await asyncio.gather(*(power_state(api, vm_id) for _name, vm_id in vms), return_exceptions=True)
    found = []
    for (name, vm_id), state in zip(vms, states, strict=True):
        if isinstance(state, VmrestError) and state.status == 404:
            continue  # deleted between the two calls
        if isinstance(state, BaseException):
            raise state
        found.append(_info(name, vm_id, state))
    return found


async def status(api: Vmrest, vm_uuid: str, ref: str | None) -> VMInfo:
    """CPU, memory, power state, template and (when running) the guest's address."""
    vm_id = await resolve(api, vm_uuid, ref)
    try:
        hardware, state, template = await asyncio.gather(
            api.get(f"/api/vms/{vm_id}"), power_state(api, vm_id), api.get(f"/api/vms/{vm_id}/params/{TEMPLATE_PARAM}"))
    except VmrestError as exc:
        raise business(exc, f"status of {vm_uuid}") from None
    ips: list[str] = []
    if state == "poweredOn":
        with contextlib.suppress(VmrestError):  # vmrest answers 500 until the guest's tools report
            answer = await api.get(f"/api/vms/{vm_id}/ip")
            if isinstance(answer, dict) and answer.get("ip"):
                ips = [str(answer["ip"])]
    return _info(vm_uuid, vm_id, state, os_name=(template or {}).get("value") or None,
                 cpu_num=hardware.get("cpu", {}).get("processors"), ram_num=hardware.get("memory"),
                 ip_addresses=ips)


async def templates(api: Vmrest) -> dict[str, str]:
    """Template VM name -> vmrest id."""
    prefix = api.settings.template_prefix
    return {vm_name(v["path"]): v["id"] for v in await api.list_vms() if is_template(vm_name(v["path"]), prefix)}


async def free_vnc_port(api: Vmrest) -> int:
    """The lowest port of the host's VNC range no other VM was given."""
    ids = [v["id"] for v in await api.list_vms()]
    answers = await asyncio.gather(*(api.get(f"/api/vms/{i}/params/RemoteDisplay.vnc.port") for i in ids),
                                   return_exceptions=True)
    taken = {int(a["value"]) for a in answers if isinstance(a, dict) and str(a.get("value", "")).isdigit()}
    for port in range(api.settings.vnc_first, api.settings.vnc_last + 1):
        if port not in taken:
            return port
    raise errors.VMCreateFailed(f"no free VNC port left in {api.settings.vnc_first}-{api.settings.vnc_last}")


async def _template_id(api: Vmrest, os_name: str) -> str:
    found = await templates(api)
    parent = found.get(os_name)
    if parent is None:
        raise errors.BadRequest(f"{os_name} is not a template VM on this host (templates: {sorted(found)})")
    return parent


async def _clone(api: Vmrest, spec: VMSpec, parent: str, progress: Progress) -> str:
    """Clone ``parent`` as ``spec.vm_uuid`` with the spec's CPU/RAM and a VNC console; undo it on failure."""
    progress(10, f"cloning {spec.os_name}")
    try:
        made = await api.post("/api/vms", {"name": spec.vm_uuid, "parentId": parent})
    except VmrestError as exc:
        if exc.status == 409:
            raise errors.Conflict(f"create {spec.vm_uuid}: {exc.message}") from None
        raise business(exc, f"clone {spec.os_name} as {spec.vm_uuid}") from None
    vm_id = str(made["id"])
    api.index.ids[spec.vm_uuid] = vm_id
    try:
        progress(60, f"setting {spec.cpu_num} CPU and {spec.ram_num} MB")
        await api.put(f"/api/vms/{vm_id}", {"processors": spec.cpu_num, "memory": spec.ram_num})
        async with host_lock(api.host):  # two creates must not pick the same VNC port
            port = await free_vnc_port(api)
            params = {TEMPLATE_PARAM: spec.os_name, "RemoteDisplay.vnc.enabled": "TRUE",
                      "RemoteDisplay.vnc.port": str(port), "RemoteDisplay.vnc.password": secrets.token_hex(4)}
            for name, value in params.items():
                await api.put(f"/api/vms/{vm_id}/params", {"name": name, "value": value})
    except (VmrestError, errors.IDCSError) as exc:
        with contextlib.suppress(Exception):
            await api.delete(f"/api/vms/{vm_id}")
        api.index.ids.pop(spec.vm_uuid, None)
        if isinstance(exc, VmrestError):
            raise business(exc, f"configure {spec.vm_uuid}") from None
        raise
    return vm_id


async def create(api: Vmrest, spec: VMSpec, progress: Progress) -> VMInfo:
    """Clone the template ``spec.os_name``, set CPU/RAM and a VNC console (left powered off)."""
    parent = await _template_id(api, spec.os_name)
    if api.index.lookup(spec.vm_uuid) is not None:
        raise errors.Conflict(f"a VM named {spec.vm_uuid} already exists on the host")
    vm_id = await _clone(api, spec, parent, progress)
    progress(90, "created")
    return await status(api, spec.vm_uuid, vm_id)


async def reinstall(api: Vmrest, spec: VMSpec, progress: Progress) -> VMInfo:
    """A fresh clone of ``spec.os_name`` under the same name; the VM's port forwards are kept
    (pointed at the new clone's address) and it is left powered as it was."""
    from idcs_vmware import network  # network imports this module

    parent = await _template_id(api, spec.os_name)
    vm_id = await resolve(api, spec.vm_uuid, spec.ref)
    try:
        state = await power_state(api, vm_id)
        kept = await network.owned_forwards(api, spec.vm_uuid)
        if state != "poweredOff":
            progress(5, "powering the VM off")
            await api.put(f"/api/vms/{vm_id}/power", raw="off")
        await api.delete(f"/api/vms/{vm_id}")
    except VmrestError as exc:
        raise business(exc, f"reinstall {spec.vm_uuid}") from None
    api.index.ids.pop(spec.vm_uuid, None)
    vm_id = await _clone(api, spec, parent, progress)
    try:
        if state != "poweredOff":
            progress(80, "powering the VM on")
            await api.put(f"/api/vms/{vm_id}/power", raw="on")
        if kept:
            progress(90, f"pointing {len(kept)} port forward(s) at the new VM")
            await network.repoint(api, spec.vm_uuid, vm_id, kept)
    except VmrestError as exc:
        raise business(exc, f"reinstall {spec.vm_uuid}") from None
    return await status(api, spec.vm_uuid, vm_id)


async def update(api: Vmrest, spec: VMSpec) -> VMInfo:
    """Set CPU/RAM (vmrest changes the hardware of a powered-off VM only)."""
    vm_id = await resolve(api, spec.vm_uuid, spec.ref)
    state = await power_state(api, vm_id)
    if state != "poweredOff":
        raise errors.VMOperationFailed(f"{spec.vm_uuid} is {state}: power it off to change its CPU or memory")
    try:
        await api.put(f"/api/vms/{vm_id}", {"processors": spec.cpu_num, "memory": spec.ram_num})
    except VmrestError as exc:
        raise business(exc, f"update {spec.vm_uuid}") from None
    return await status(api, spec.vm_uuid, vm_id)


async def delete(api: Vmrest, vm_uuid: str, ref: str | None) -> None:
    """Power off and delete the VM and its files; already gone succeeds."""
    try:
        vm_id = await resolve(api, vm_uuid, ref)
        if await power_state(api, vm_id) != "poweredOff":
            await api.put(f"/api/vms/{vm_id}/power", raw="off")
        from idcs_vmware.network import remove_all  # network imports this module

        await remove_all(api, vm_uuid)
        await api.delete(f"/api/vms/{vm_id}")
    except errors.VMNotFound:
        pass
    except VmrestError as exc:
        if exc.status != 404:
            raise business(exc, f"delete {vm_uuid}") from None
    api.index.ids.pop(vm_uuid, None)


def _verbs(action: PowerAction, state: str, pause_mode: str) -> list[str]:
    """The vmrest power words that take a VM in ``state`` where ``action`` asks ([] if it is there)."""
    if action == PowerAction.START:
        return {"poweredOff": ["on"], "suspended": ["on"], "paused": ["unpause"]}.get(state, [])
    if action == PowerAction.HARD_OFF:
        return [] if state == "poweredOff" else ["off"]
    if action == PowerAction.STOP:
        return {"poweredOn": ["shutdown"], "paused": ["off"], "suspended": ["off"]}.get(state, [])
    if action == PowerAction.RESET:
        return {"poweredOn": ["reset"], "paused": ["off", "on"], "suspended": ["on", "reset"]}.get(state, ["on"])
    if action == PowerAction.PAUSE:
        if state == "poweredOff":
            raise errors.VMOperationFailed("the VM is powered off: it cannot be paused")
        return [pause_mode] if state == "poweredOn" else []
    if action == PowerAction.RESUME:
        return {"paused": ["unpause"], "suspended": ["on"]}.get(state, [])
    raise errors.NotSupported(f"power action {action} is not supported by the VmwareWork engine")


async def power(api: Vmrest, vm_uuid: str, ref: str | None, action: PowerAction) -> VMInfo:
    """Apply ``action`` through ``PUT /api/vms/{id}/power``; being there already is not an error."""
    vm_id = await resolve(api, vm_uuid, ref)
    state = await power_state(api, vm_id)
    for verb in _verbs(action, state, api.settings.pause_mode):
        try:
            answer = await api.put(f"/api/vms/{vm_id}/power", raw=verb)
        except VmrestError as exc:
            if verb == "reset" and exc.status == 400:  # a vmrest without reset: off, then on
                await api.put(f"/api/vms/{vm_id}/power", raw="off")
                answer = await api.put(f"/api/vms/{vm_id}/power", raw="on")
            else:
                raise business(exc, f"{action.value} {vm_uuid} ({verb})") from None
        state = str((answer or {}).get("power_state", state))
    return await status(api, vm_uuid, vm_id)
