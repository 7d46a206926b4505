"""One VM's whole life through the engine's hooks, in the order an IDC customer lives it."""

from __future__ import annotations

import uuid

import docker
import pytest
from idcs_oci.containers import no_progress
from idcs_oci.engine import OCIEngine
from idcs_oci.testing import DockerBackend, free_port, http_get, sh

from idcs_core import errors
from idcs_core.types import DiskSpec, HostSpec, NatRule, PowerAction, Progress, VMSpec


def test_vm_life(engine: OCIEngine, host: HostSpec, backend: DockerBackend, dc: docker.DockerClient,
                 progress: Progress) -> None:
    vm = f"t-life-{uuid.uuid4().hex[:6]}"
    port = free_port()

    # create (started by the engine) and power it off and on again
    info = engine.vm_create(host=host, spec=VMSpec(vm, backend.image, 1, 64, 2), progress=progress)
    assert info.status == "running"
    assert engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.HARD_OFF).status == "stopped"
    assert engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.START).status == "running"

    # NAT: a real HTTP request through the forwarded port
    rule = engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 80, "tcp"))
    assert rule.lan_addr
    assert "hello from idcs-test" in http_get(port)

    # pause / resume: a paused VM does not answer, a resumed one does
    assert engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.PAUSE).status == "paused"
    with pytest.raises(OSError):
        http_get(port, timeout=0.5)
    assert engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.RESUME).status == "running"
    assert "hello" in http_get(port)

    # backup, write, restore: the file is as it was at the backup
    sh(dc, vm, "echo before > /www/f.txt")
    engine.backup_create(host=host, vm_uuid=vm, backup_name="b1", description="first", progress=progress)
    sh(dc, vm, "echo after > /www/f.txt; echo extra > /www/g.txt")
    assert http_get(port, "/f.txt").strip() == "after"
    engine.backup_restore(host=host, vm_uuid=vm, backup_name="b1", progress=progress)
    assert http_get(port, "/f.txt").strip() == "before"
    assert "No such file" in dc.containers.get(vm).exec_run(["cat", "/www/g.txt"]).output.decode()

    # an extra disk whose data survives the next NAT recreation
    engine.disk_attach(progress=no_progress, host=host, vm_uuid=vm, disk=DiskSpec("data", 1))
    sh(dc, vm, "echo disk-data > /mnt/data/d")
    port2 = free_port()
    engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port2, 80, "tcp"))
    assert sh(dc, vm, "cat /mnt/data/d").strip() == "disk-data"
    assert http_get(port2, "/f.txt").strip() == "before"

    # root password and a terminal session
    engine.vm_set_password(host=host, vm_uuid=vm, username="root", password="n3w-Root")
    assert sh(dc, vm, "grep '^root:' /etc/shadow").startswith("root:$6$")
    term = engine.vm_terminal_open(host=host, vm_uuid=vm, cols=80, rows=24)
    try:
        term.write(b"cat /mnt/data/d; echo round-$((40+2))\n")
        seen = b""
        while b"round-42" not in seen:
            chunk = term.read()
            assert chunk, f"terminal closed early: {seen!r}"
            seen += chunk
        assert b"disk-data" in seen
    finally:
        term.close()

    # delete: the VM, its disk and its saved filesystem go; the backup stays until deleted
    engine.vm_delete(host=host, vm_uuid=vm, progress=progress)
    with pytest.raises(errors.VMNotFound):
        engine.vm_status(host=host, vm_uuid=vm)
    with pytest.raises(OSError):
        http_get(port2, timeout=0.5)
    assert [b.backup_name for b in engine.backup_list(host=host) if b.vm_uuid == vm] == ["b1"]
    engine.backup_delete(host=host, vm_uuid=vm, backup_name="b1")
    leftovers = [t for i in dc.images.list() for t in i.tags if vm in t]
    assert leftovers == []
