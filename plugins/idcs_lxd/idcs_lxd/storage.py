"""Storage: the pool to use, extra disks as custom volumes, and ISO images for VMs.

An extra disk ``<name>`` of VM ``<vm>`` is the custom volume ``idcs-<vm>-<name>``
in the VM's pool (tagged ``user.idcs.vm`` / ``user.idcs.disk``), attached as the
disk device ``idcs-disk-<name>`` at ``/mnt/<name>`` (containers) or as a block
device (VMs). An ISO is the disk device ``idcs-iso`` of a VM.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pylxd import Client
from pylxd import exceptions as lxd_exc

from idcs_core import errors
from idcs_core.types import DiskSpec, HostSpec
from idcs_lxd import images, instances
from idcs_lxd.client import run_async
from idcs_lxd.info import root_device
from idcs_lxd.naming import instance_name

DISK_PREFIX = "idcs-disk-"
ISO_DEVICE = "idcs-iso"
KEY_VM = "user.idcs.vm"
KEY_DISK = "user.idcs.disk"

_DISK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# Drivers that enforce a size on a root disk or volume (dir only with project quotas).
QUOTA_DRIVERS = {"zfs", "btrfs", "lvm", "ceph", "cephfs", "powerflex", "lvmcluster"}


def default_pool(client: Client, host: HostSpec, profiles: list[str] | None = None) -> str | None:
    """The pool new instances and disks go to: host option ``pool``, else the root disk
    pool of the first profile that has one, else a pool named ``default``."""
    if host.options.get("pool"):
        return str(host.options["pool"])
    for profile in profiles or profile_names(host):
        try:
            devices = client.api.profiles[profile].get().json()["metadata"].get("devices") or {}
        except lxd_exc.NotFound:
            continue
        for device in devices.values():
            if device.get("type") == "disk" and device.get("path") == "/" and device.get("pool"):
                return str(device["pool"])
    pools = [p.rstrip("/").rsplit("/", 1)[-1] for p in client.api.storage_pools.get().json()["metadata"]]
    return "default" if "default" in pools else (pools[0] if pools else None)


def profile_names(host: HostSpec) -> list[str]:
    """Profiles for new instances: host option ``profiles`` (list or comma-separated), else default."""
    value = host.options.get("profiles") or ["default"]
    if isinstance(value, str):
        value = [p.strip() for p in value.split(",") if p.strip()]
    return [str(p) for p in value]


def pool_driver(client: Client, pool: str) -> str:
    return str(client.api.storage_pools[pool].get().json()["metadata"].get("driver") or "")


def quota_note(driver: str) -> dict[str, Any]:
    """What ``VMInfo.extra`` says about whether the pool enforces disk sizes."""
    enforced = driver in QUOTA_DRIVERS
    note: dict[str, Any] = {"storage_driver": driver, "disk_limit_enforced": enforced}
    if not enforced:
        note["disk_limit_note"] = (f"the {driver or 'unknown'} storage driver does not enforce disk sizes "
                                   "(dir: only with file-system project quotas); hdd_num is recorded only")
    return note


def volume_name(instance: str, disk_name: str) -> str:
    return f"idcs-{instance}-{disk_name}"


def check_disk_name(name: str) -> str:
    if not _DISK_NAME.match(name or "") or ".." in name or name.startswith("."):
        raise errors.BadRequest(f"invalid disk name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return name


def _instance_pool(client: Client, host: HostSpec, inst: dict[str, Any]) -> str:
    pool = root_device(inst).get("pool") or default_pool(client, host)
    if not pool:
        raise errors.VMOperationFailed("the host has no storage pool")
    return str(pool)


def _volume(client: Client, pool: str, name: str) -> dict[str, Any] | None:
    try:
        return client.api.storage_pools[pool].volumes.custom[name].get().json()["metadata"]
    except lxd_exc.NotFound:
        return None


def disk_attach(client: Client, host: HostSpec, vm_uuid: str, disk: DiskSpec) -> None:
    name = check_disk_name(disk.name)
    if disk.size_gb is None or int(disk.size_gb) <= 0:
        raise errors.BadRequest("hdd_size must be a positive number of GB")
    instance = instance_name(vm_uuid)
    inst = instances.get(client, instance)
    is_vm = inst.get("type") == "virtual-machine"
    pool = _instance_pool(client, host, inst)
    vol = volume_name(instance, name)
    existing = _volume(client, pool, vol)
    if existing is None:
        body = {"name": vol, "type": "custom", "content_type": "block" if is_vm else "filesystem",
                "description": f"OpenIDCS disk {name} of {vm_uuid}",
                "config": {"size": f"{int(disk.size_gb)}GiB", KEY_VM: instance, KEY_DISK: name}}
        run_async(client, client.api.storage_pools[pool].volumes.custom.post(json=body))
    elif existing.get("config", {}).get(KEY_VM) not in (None, instance):
        raise errors.Conflict(f"volume {vol} belongs to another VM")
    device: dict[str, Any] = {"type": "disk", "pool": pool, "source": vol}
    if not is_vm:
        device["path"] = f"/mnt/{name}"

    def add(body: dict[str, Any]) -> None:
        body["devices"].setdefault(DISK_PREFIX + name, device)

    instances.modify(client, instance, add)


def _remove_device(client: Client, instance: str, device: str) -> None:
    def drop(body: dict[str, Any]) -> None:
        body["devices"].pop(device, None)

    instances.modify(client, instance, drop)


def disk_detach(client: Client, vm_uuid: str, disk_name: str) -> None:
    _remove_device(client, instance_name(vm_uuid), DISK_PREFIX + check_disk_name(disk_name))


def disk_delete(client: Client, host: HostSpec, vm_uuid: str, disk_name: str) -> None:
    name = check_disk_name(disk_name)
    instance = instance_name(vm_uuid)
    pool: str | None = None
    try:
        inst = instances.get(client, instance)
        device = (inst.get("devices") or {}).get(DISK_PREFIX + name) or {}
        pool = device.get("pool") or _instance_pool(client, host, inst)
        _remove_device(client, instance, DISK_PREFIX + name)
    except errors.VMNotFound:
        pass
    pools = [pool] if pool else [p.rstrip("/").rsplit("/", 1)[-1]
                                 for p in client.api.storage_pools.get().json()["metadata"]]
    for candidate in pools:
        try:
            run_async(client, client.api.storage_pools[candidate].volumes.custom[volume_name(instance, name)]
                      .delete())
        except lxd_exc.NotFound:
            continue


def volumes_of(client: Client, vm_uuid: str) -> list[tuple[str, str]]:
    """(pool, volume) of every custom volume this engine made for ``vm_uuid``."""
    instance = instance_name(vm_uuid)
    found = []
    for pool in client.api.storage_pools.get().json()["metadata"]:
        pool_name = pool.rstrip("/").rsplit("/", 1)[-1]
        vols = client.api.storage_pools[pool_name].volumes.get(params={"recursion": "1"}).json()["metadata"]
        found += [(pool_name, v["name"]) for v in vols
                  if v.get("type") == "custom" and (v.get("config") or {}).get(KEY_VM) == instance]
    return found


def delete_volumes(client: Client, vm_uuid: str) -> None:
    for pool, vol in volumes_of(client, vm_uuid):
        try:
            run_async(client, client.api.storage_pools[pool].volumes.custom[vol].delete())
        except lxd_exc.NotFound:
            pass


# ------------------------------------------------------------------ ISO


def _require_vm(inst: dict[str, Any]) -> None:
    if inst.get("type") != "virtual-machine":
        raise errors.NotSupported(f"{inst.get('name')} is a container: ISO images can only be inserted "
                                  "into LXD virtual machines")


def iso_mount(client: Client, host: HostSpec, vm_uuid: str, iso_name: str, local: bool) -> None:
    instance = instance_name(vm_uuid)
    inst = instances.get(client, instance)
    _require_vm(inst)
    device: dict[str, Any] | None = None
    for pool, vol in images.iso_volumes(client):
        if vol == iso_name:
            device = {"type": "disk", "pool": pool, "source": vol, "boot.priority": "10"}
            break
    if device is None:
        for path in images.iso_files(host, local):
            if path.name == Path(iso_name).name:
                device = {"type": "disk", "source": str(path), "boot.priority": "10"}
                break
    if device is None:
        raise errors.BadRequest(f"unknown ISO {iso_name!r}: not an ISO volume nor a file in iso_dir")

    def insert(body: dict[str, Any]) -> None:
        body["devices"][ISO_DEVICE] = device

    instances.modify(client, instance, insert)


def iso_unmount(client: Client, vm_uuid: str, iso_name: str) -> None:
    instance = instance_name(vm_uuid)
    inst = instances.get(client, instance)
    _require_vm(inst)
    current = (inst.get("devices") or {}).get(ISO_DEVICE)
    if current is None:
        return
    if iso_name and Path(str(current.get("source", ""))).name not in (iso_name, Path(iso_name).name):
        return  # another ISO is inserted: ejecting this one is already done
    _remove_device(client, instance, ISO_DEVICE)
