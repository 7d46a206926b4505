"""Extra disks: named volumes ``idcs-<vm_uuid>-<name>`` mounted at ``/mnt/<name>``.

Attaching or detaching recreates the container (data kept; Docker cannot change
the mounts of a container), and says so in the progress before it starts. The
volume outlives the container's recreations and a detach; only ``disk_delete``
(or deleting the VM) destroys it. Docker's ``local`` volume
driver has no size limit: the requested size is recorded in the volume's
labels, not enforced.
"""

from __future__ import annotations

import docker.errors

from idcs_core import errors
from idcs_core.types import DiskSpec, Progress
from idcs_oci import containers, naming
from idcs_oci.client import Conn
from idcs_oci.containers import Blueprint, no_progress


def _ensure_volume(conn: Conn, vm_uuid: str, disk: DiskSpec) -> str:
    name = naming.volume_name(vm_uuid, disk.name)
    try:
        labels = conn.api.inspect_volume(name).get("Labels") or {}
    except docker.errors.NotFound:
        conn.api.create_volume(name, labels={
            naming.MANAGED: "1", naming.VM_UUID: vm_uuid, naming.DISK_NAME: disk.name,
            naming.DISK_SIZE: str(disk.size_gb)})
        return name
    if (labels.get(naming.VM_UUID), labels.get(naming.DISK_NAME)) != (vm_uuid, disk.name):
        raise errors.Conflict(f"volume {name} already exists and is not disk {disk.name} of {vm_uuid}")
    return name


def attach(conn: Conn, vm_uuid: str, disk: DiskSpec, progress: Progress = no_progress) -> None:
    naming.check_disk_name(disk.name)
    attrs = containers.inspect(conn, vm_uuid)
    volume = _ensure_volume(conn, vm_uuid, disk)
    if volume in containers.clone(attrs).volume_mounts():
        return

    def mount(bp: Blueprint) -> Blueprint:
        bp.add_volume(volume, naming.disk_mount_point(disk.name))
        return bp

    progress(5, f"the container is recreated to attach disk {disk.name}: Docker cannot add a volume to a "
                "running one (one restart, data kept)")
    containers.recreate(conn, attrs, mount, progress=progress)


def detach(conn: Conn, vm_uuid: str, disk_name: str, progress: Progress = no_progress) -> None:
    naming.check_disk_name(disk_name)
    attrs = containers.inspect(conn, vm_uuid)
    volume = naming.volume_name(vm_uuid, disk_name)
    if volume not in containers.clone(attrs).volume_mounts():
        return

    def unmount(bp: Blueprint) -> Blueprint:
        bp.remove_volume(volume)
        return bp

    progress(5, f"the container is recreated to detach disk {disk_name}: Docker cannot remove a volume from "
                "a running one (one restart, data kept)")
    containers.recreate(conn, attrs, unmount, progress=progress)


def delete(conn: Conn, vm_uuid: str, disk_name: str, progress: Progress = no_progress) -> None:
    """Detach (if the VM still exists) and remove the volume; a disk already gone is fine."""
    naming.check_disk_name(disk_name)
    try:
        conn.api.inspect_container(naming.check_vm_uuid(vm_uuid))
    except docker.errors.NotFound:
        pass
    else:
        detach(conn, vm_uuid, disk_name, progress)
    try:
        conn.api.remove_volume(naming.volume_name(vm_uuid, disk_name))
    except docker.errors.NotFound:
        pass
