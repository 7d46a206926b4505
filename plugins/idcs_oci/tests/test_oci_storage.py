"""Extra disks and backups against a real dockerd."""

from __future__ import annotations

import docker
import pytest
from idcs_oci import naming
from idcs_oci.containers import no_progress
from idcs_oci.engine import OCIEngine
from idcs_oci.testing import MakeVM, free_port, http_get, sh

from idcs_core import errors
from idcs_core.types import DiskSpec, HostSpec, NatRule, PowerAction, Progress


def _mounted(dc: docker.DockerClient, vm: str, path: str) -> bool:
    return f" {path} " in sh(dc, vm, "cat /proc/mounts")


def test_disk_attach_detach_delete(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                   dc: docker.DockerClient) -> None:
    vm = make_vm().vm_uuid
    volume = naming.volume_name(vm, "data")
    engine.disk_attach(progress=no_progress, host=host, vm_uuid=vm, disk=DiskSpec("data", 5))
    assert _mounted(dc, vm, "/mnt/data")
    labels = dc.api.inspect_volume(volume)["Labels"]
    assert labels[naming.VM_UUID] == vm and labels[naming.DISK_SIZE] == "5"
    sh(dc, vm, "echo on-disk > /mnt/data/f; echo on-root > /root/r")

    same_id = dc.api.inspect_container(vm)["Id"]
    engine.disk_attach(progress=no_progress, host=host, vm_uuid=vm, disk=DiskSpec("data", 5))  # attached already: no-op
    assert dc.api.inspect_container(vm)["Id"] == same_id

    # A NAT change is live: the disk stays mounted with its data.
    port = free_port()
    engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 80))
    assert sh(dc, vm, "cat /mnt/data/f /root/r").split() == ["on-disk", "on-root"]
    assert "hello" in http_get(port)

    engine.disk_detach(progress=no_progress, host=host, vm_uuid=vm, disk_name="data")
    assert not _mounted(dc, vm, "/mnt/data")
    assert sh(dc, vm, "cat /root/r").strip() == "on-root"
    assert "hello" in http_get(port)  # ports kept through the disk's recreation
    engine.disk_detach(progress=no_progress, host=host, vm_uuid=vm, disk_name="data")  # detached already: fine
    dc.api.inspect_volume(volume)  # kept for a later attach

    engine.disk_attach(progress=no_progress, host=host, vm_uuid=vm, disk=DiskSpec("data", 5))
    assert sh(dc, vm, "cat /mnt/data/f").strip() == "on-disk"

    engine.disk_delete(progress=no_progress, host=host, vm_uuid=vm, disk_name="data")
    assert not _mounted(dc, vm, "/mnt/data")
    assert not dc.api.volumes(filters={"name": volume})["Volumes"]
    engine.disk_delete(progress=no_progress, host=host, vm_uuid=vm, disk_name="data")  # gone already: fine

    with pytest.raises(errors.BadRequest):
        engine.disk_attach(progress=no_progress, host=host, vm_uuid=vm, disk=DiskSpec("../etc", 1))
    with pytest.raises(errors.VMNotFound):
        engine.disk_attach(progress=no_progress, host=host, vm_uuid="t-missing", disk=DiskSpec("x", 1))


def test_volume_name_clash_is_conflict(engine: OCIEngine, host: HostSpec, make_vm: MakeVM) -> None:
    """VM "a" disk "b-c" and VM "a-b" disk "c" would share a volume name: the second is refused."""
    a = make_vm().vm_uuid
    ab = make_vm(vm_uuid=f"{a}-b").vm_uuid
    engine.disk_attach(progress=no_progress, host=host, vm_uuid=a, disk=DiskSpec("b-c", 1))
    with pytest.raises(errors.Conflict):
        engine.disk_attach(progress=no_progress, host=host, vm_uuid=ab, disk=DiskSpec("c", 1))


def test_backup_and_restore(engine: OCIEngine, host: HostSpec, make_vm: MakeVM, dc: docker.DockerClient,
                            progress: Progress) -> None:
    vm = make_vm(ram_num=48).vm_uuid
    port = free_port()
    engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 80))
    engine.disk_attach(progress=no_progress, host=host, vm_uuid=vm, disk=DiskSpec("vol", 1))
    sh(dc, vm, "echo v1 > /www/state.txt; echo gone-later > /root/old")
    engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.PAUSE)

    info = engine.backup_create(host=host, vm_uuid=vm, backup_name="nightly 1", description="before upgrade",
                                progress=progress)
    assert (info.backup_name, info.vm_uuid, info.description) == ("nightly 1", vm, "before upgrade")
    assert info.size_bytes and info.created_at
    assert progress.calls[-1][0] == 100
    assert dc.api.inspect_container(vm)["State"]["Status"] == "paused"  # a backup leaves it as it was
    with pytest.raises(errors.Conflict):
        engine.backup_create(host=host, vm_uuid=vm, backup_name="nightly 1", description="",
                             progress=progress)

    engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.RESUME)
    sh(dc, vm, "echo v2 > /www/state.txt; rm /root/old; echo new > /root/new")
    assert http_get(port, "/state.txt").strip() == "v2"

    restored = engine.backup_restore(host=host, vm_uuid=vm, backup_name="nightly 1", progress=progress)
    assert (restored.status, restored.ram_num) == ("running", 48)
    assert http_get(port, "/state.txt").strip() == "v1"  # the data, through the same port
    assert sh(dc, vm, "cat /root/old").strip() == "gone-later"
    assert "No such file" in dc.containers.get(vm).exec_run(["cat", "/root/new"]).output.decode()
    assert _mounted(dc, vm, "/mnt/vol")
    labels = dc.api.inspect_container(vm)["Config"]["Labels"]
    assert labels[naming.BACKUP] == "" and labels[naming.VM_UUID] == vm

    listed = [b for b in engine.backup_list(host=host) if b.vm_uuid == vm]
    assert [(b.backup_name, b.description) for b in listed] == [("nightly 1", "before upgrade")]

    # The backup can go while the restored container still runs on its layers.
    engine.backup_delete(host=host, vm_uuid=vm, backup_name="nightly 1")
    engine.backup_delete(host=host, vm_uuid=vm, backup_name="nightly 1")  # gone already: fine
    assert not [b for b in engine.backup_list(host=host) if b.vm_uuid == vm]
    assert sh(dc, vm, "cat /www/state.txt").strip() == "v1"
    with pytest.raises(errors.NotFound):
        engine.backup_restore(host=host, vm_uuid=vm, backup_name="nightly 1", progress=progress)

    # After a restore, further recreations and backups keep working.
    engine.nat_remove(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 80))
    assert sh(dc, vm, "cat /www/state.txt").strip() == "v1"
    engine.backup_create(host=host, vm_uuid=vm, backup_name="b2", description="", progress=progress)
    assert [b.backup_name for b in engine.backup_list(host=host) if b.vm_uuid == vm] == ["b2"]


def test_restore_a_deleted_vm(engine: OCIEngine, host: HostSpec, make_vm: MakeVM, dc: docker.DockerClient,
                              progress: Progress) -> None:
    vm = make_vm(cpu_num=1, ram_num=80).vm_uuid
    port = free_port()
    engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 80))
    sh(dc, vm, "echo survived > /www/s.txt")
    engine.backup_create(host=host, vm_uuid=vm, backup_name="last", description="", progress=progress)
    engine.vm_delete(host=host, vm_uuid=vm, progress=progress)
    assert [b.backup_name for b in engine.backup_list(host=host) if b.vm_uuid == vm] == ["last"]

    info = engine.backup_restore(host=host, vm_uuid=vm, backup_name="last", progress=progress)
    assert (info.status, info.ram_num, info.cpu_num) == ("running", 80, 1)
    assert http_get(port, "/s.txt").strip() == "survived"
    assert dc.api.inspect_container(vm)["HostConfig"]["Init"] is True
    engine.backup_delete(host=host, vm_uuid=vm, backup_name="last")
