"""The engine's own behaviour against vcsim (vCenter model), hook by hook."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from idcs_esxi import testing
from idcs_esxi.engine import ESXiEngine
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from idcs_core import errors
from idcs_core.services.rfb import connect_vnc
from idcs_core.testing.xvnc import xvnc_server
from idcs_core.types import ConsoleKind, ImageKind, PowerAction, VMSpec

from .conftest import host_spec


def _vm_object(sim: testing.Vcsim, name: str) -> tuple[object, vim.VirtualMachine]:
    si = testing.service_instance(sim)
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    vm = next(v for v in view.view if v.name == name)
    return si, vm


def test_wrong_password_is_a_clear_1003_without_the_password(engine: ESXiEngine, vpx: testing.Vcsim) -> None:
    bad = host_spec(vpx, password="Not-The-Pass-9")
    bad = type(bad)(name=bad.name, server_type=bad.server_type, addr=bad.addr, user=bad.user,
                    password="Not-The-Pass-9", options=bad.options)
    with pytest.raises(errors.HostUnreachable) as caught:
        engine.host_connect(host=bad)
    assert "wrong user name or password" in caught.value.msg
    assert "Not-The-Pass-9" not in caught.value.msg


def test_tls_is_verified_unless_the_host_says_otherwise(engine: ESXiEngine, vpx: testing.Vcsim) -> None:
    strict = host_spec(vpx, name="esxi-strict", verify_tls=True)
    with pytest.raises(errors.HostUnreachable) as caught:
        engine.host_connect(host=strict)
    assert "verify_tls" in caught.value.msg and "certificate" in caught.value.msg
    status = engine.host_connect(host=host_spec(vpx, name="esxi-relaxed", verify_tls="false"))
    assert status.online and status.version and "vCenter" in status.version


def test_host_status_reads_quickstats_in_one_round_trip(engine: ESXiEngine, vpx: testing.Vcsim) -> None:
    host = host_spec(vpx)
    engine.host_connect(host=host)
    conn = engine.sessions.get(host)
    before = conn.round_trips
    status = engine.host_status(host=host)
    assert conn.round_trips - before == 1
    assert status.vms_count is not None and status.vms_count >= 4  # the model's VMs, the template excluded
    assert status.cpu_usage is not None and 0 < status.cpu_usage <= 100
    assert status.memory_usage is not None and 0 < status.memory_usage <= 100
    assert status.disk_usage is not None and 0 < status.disk_usage < 100
    assert status.extra["api_type"] == "VirtualCenter"


def test_expired_session_logs_in_again(engine: ESXiEngine, vpx: testing.Vcsim) -> None:
    host = host_spec(vpx)
    engine.host_status(host=host)
    old = engine.sessions.get(host)
    old.content.sessionManager.Logout()  # the server forgets the session (as after its expiry)
    assert engine.host_status(host=host).online
    assert engine.sessions.get(host) is not old


def test_images_list_templates_and_datastore_isos_with_spaces(engine: ESXiEngine, vpx: testing.Vcsim) -> None:
    host = host_spec(vpx)
    found = {(i.file, i.kind, i.family) for i in engine.os_images(host=host)}
    assert (testing.TEMPLATE, ImageKind.TEMPLATE, "debian") in found
    assert ("[LocalDS_0] iso/ubuntu 22.04.iso", ImageKind.ISO, "ubuntu") in found
    assert ("[LocalDS_0] iso/debian-12.iso", ImageKind.ISO, "debian") in found


def test_vm_from_iso_ref_index_iso_mount_and_bad_paths(engine: ESXiEngine, vpx: testing.Vcsim) -> None:
    host = host_spec(vpx)
    seen: list[int] = []
    spec = VMSpec(vm_uuid="esxi-t-iso", os_name="[LocalDS_0] iso/debian-12.iso", cpu_num=2, ram_num=256, hdd_num=3)
    info = engine.vm_create(host=host, spec=spec, progress=lambda p, m="": seen.append(p))
    try:
        assert seen == sorted(seen) and seen[-1] >= 99, seen  # progress only moves forward
        assert (info.status, info.cpu_num, info.ram_num, info.hdd_num) == ("running", 2, 256, 3)
        assert info.ref and info.ref != spec.vm_uuid and info.extra["isos"] == ["[LocalDS_0] iso/debian-12.iso"]
        with pytest.raises(errors.Conflict):
            engine.vm_create(host=host, spec=spec, progress=lambda p, m="": None)

        # the ref (instance UUID) finds the VM after it was renamed behind OpenIDCS's back
        si, vm = _vm_object(vpx, "esxi-t-iso")
        WaitForTask(vm.Rename_Task(newName="esxi-t-iso-renamed"))
        assert engine.vm_status(host=host, vm_uuid="esxi-t-iso", ref=info.ref).vm_uuid == "esxi-t-iso-renamed"
        WaitForTask(vm.Rename_Task(newName="esxi-t-iso"))
        Disconnect(si)

        # lookups go through the cached index: one round trip per status, no search
        conn = engine.sessions.get(host)
        before = conn.round_trips
        for _ in range(5):
            engine.vm_status(host=host, vm_uuid="esxi-t-iso", ref=info.ref)
        assert conn.round_trips - before == 5

        engine.iso_mount(host=host, vm_uuid="esxi-t-iso", ref=info.ref, iso_name="[LocalDS_0] iso/ubuntu 22.04.iso")
        assert engine.vm_status(host=host, vm_uuid="esxi-t-iso", ref=info.ref).extra["isos"] == \
            ["[LocalDS_0] iso/ubuntu 22.04.iso"]
        for bad in ("[LocalDS_0] ../../etc/passwd", "[LocalDS_0] iso/none.iso", "no-datastore.iso"):
            with pytest.raises(errors.BadRequest):
                engine.iso_mount(host=host, vm_uuid="esxi-t-iso", ref=info.ref, iso_name=bad)
        engine.iso_unmount(host=host, vm_uuid="esxi-t-iso", ref=info.ref, iso_name="[LocalDS_0] iso/ubuntu 22.04.iso")
        assert engine.vm_status(host=host, vm_uuid="esxi-t-iso", ref=info.ref).extra["isos"] == []

        with pytest.raises(errors.BadRequest, match="cannot shrink"):
            engine.vm_update(host=host, spec=VMSpec("esxi-t-iso", spec.os_name, 2, 256, 1, ref=info.ref),
                             progress=lambda p, m="": None)
        with pytest.raises(errors.VMOperationFailed, match="powered off"):
            engine.vm_power(host=host, vm_uuid="esxi-t-iso", ref=info.ref, action=PowerAction.HARD_OFF)
            engine.vm_power(host=host, vm_uuid="esxi-t-iso", ref=info.ref, action=PowerAction.PAUSE)
    finally:
        engine.vm_delete(host=host, vm_uuid="esxi-t-iso", ref=info.ref, progress=lambda p, m="": None)
    with pytest.raises(errors.VMNotFound):
        engine.vm_status(host=host, vm_uuid="esxi-t-iso", ref=info.ref)
    engine.vm_delete(host=host, vm_uuid="esxi-t-iso", ref=info.ref, progress=lambda p, m="": None)  # idempotent


def test_unknown_image_is_a_bad_request_and_leaves_nothing(engine: ESXiEngine, vpx: testing.Vcsim) -> None:
    host = host_spec(vpx)
    before = {v.vm_uuid for v in engine.vm_list(host=host)}
    with pytest.raises(errors.BadRequest, match="no template or ISO"):
        engine.vm_create(host=host, spec=VMSpec("esxi-t-bad", "no-such-template", 1, 128, 2),
                         progress=lambda p, m="": None)
    assert {v.vm_uuid for v in engine.vm_list(host=host)} == before


def test_vnc_console_endpoint_opens_with_the_vms_password(engine: ESXiEngine, vpx: testing.Vcsim) -> None:
    """A VM whose RemoteDisplay.vnc.* settings point at a real VNC server (Xvnc with VNC
    authentication, standing in for the ESXi host's): the endpoint carries the password the
    core logs in with."""
    host = host_spec(vpx, console_address="127.0.0.1")
    with xvnc_server("esxi-pw1") as vnc:
        si, vm = _vm_object(vpx, "DC0_H0_VM0")
        settings = {"RemoteDisplay.vnc.enabled": "true", "RemoteDisplay.vnc.port": str(vnc.port),
                    "RemoteDisplay.vnc.password": "esxi-pw1"}
        spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in settings.items()])
        WaitForTask(vm.ReconfigVM_Task(spec=spec))
        Disconnect(si)
        endpoint = engine.vm_console(host=host, vm_uuid="DC0_H0_VM0", ref="DC0_H0_VM0")
        assert (endpoint.kind, endpoint.address, endpoint.port, endpoint.password) == \
            (ConsoleKind.VNC, "127.0.0.1", vnc.port, "esxi-pw1")

        async def log_in() -> None:
            _reader, writer = await connect_vnc(endpoint, 10)
            writer.close()

        asyncio.run(log_in())
    with pytest.raises(errors.NotSupported, match="no VNC console"):
        engine.vm_console(host=host, vm_uuid="DC0_H0_VM1", ref="DC0_H0_VM1")


def test_detached_disk_keeps_its_file_and_delete_removes_it(engine: ESXiEngine, vpx: testing.Vcsim) -> None:
    """The simulator keeps each datastore in a local folder: the extra disk's .vmdk is a real
    file there, so detach / attach / delete are checked on the datastore itself."""
    from idcs_core.types import DiskSpec

    host = host_spec(vpx)
    info = engine.vm_create(host=host, spec=VMSpec("esxi-t-disk", testing.TEMPLATE, 1, 128, 2),
                            progress=lambda p, m="": None)
    try:
        engine.disk_attach(host=host, vm_uuid="esxi-t-disk", ref=info.ref, disk=DiskSpec("keep", 1),
                           progress=lambda p, m="": None)
        si, vm = _vm_object(vpx, "esxi-t-disk")
        disk = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)
                    and d.backing.fileName.endswith("/idcs-disk-keep.vmdk"))
        store = disk.backing.datastore
        local = Path(store.summary.url) / disk.backing.fileName.split("] ", 1)[1]
        Disconnect(si)
        assert local.is_file(), local
        local.write_bytes(b"kept on the datastore")
        engine.disk_detach(host=host, vm_uuid="esxi-t-disk", ref=info.ref, disk_name="keep",
                           progress=lambda p, m="": None)
        assert "keep" not in engine.vm_status(host=host, vm_uuid="esxi-t-disk", ref=info.ref).extra["disks"]
        assert local.read_bytes() == b"kept on the datastore"
        engine.disk_attach(host=host, vm_uuid="esxi-t-disk", ref=info.ref, disk=DiskSpec("keep", 1),
                           progress=lambda p, m="": None)
        assert engine.vm_status(host=host, vm_uuid="esxi-t-disk", ref=info.ref).extra["disks"] == {"keep": 1}
        assert local.read_bytes() == b"kept on the datastore"  # the same file, not a new disk
        engine.disk_detach(host=host, vm_uuid="esxi-t-disk", ref=info.ref, disk_name="keep",
                           progress=lambda p, m="": None)
        engine.disk_delete(host=host, vm_uuid="esxi-t-disk", ref=info.ref, disk_name="keep",
                           progress=lambda p, m="": None)  # detached: deleted from the datastore
        assert not local.exists()
        engine.disk_delete(host=host, vm_uuid="esxi-t-disk", ref=info.ref, disk_name="keep",
                           progress=lambda p, m="": None)  # idempotent
    finally:
        engine.vm_delete(host=host, vm_uuid="esxi-t-disk", ref=info.ref, progress=lambda p, m="": None)


def test_addresses_are_what_the_guest_reports(engine: ESXiEngine, vpx: testing.Vcsim) -> None:
    """vcsim lets a client play VMware Tools: ``SET.guest.ipAddress`` in extraConfig becomes
    the first NIC's address in ``guest.net``, which the engine reads."""
    host = host_spec(vpx)
    si, vm = _vm_object(vpx, "DC0_C0_RP0_VM1")
    spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key="SET.guest.ipAddress", value="10.20.30.40")])
    WaitForTask(vm.ReconfigVM_Task(spec=spec))
    mac = vm.guest.net[0].macAddress
    Disconnect(si)
    found = engine.vm_ip_list(host=host, vm_uuid="DC0_C0_RP0_VM1", ref="DC0_C0_RP0_VM1")
    assert [(a.address, a.version, a.mac_addr) for a in found] == [("10.20.30.40", 4, mac)]
    listed = next(v for v in engine.vm_list(host=host) if v.vm_uuid == "DC0_C0_RP0_VM1")
    assert listed.ip_addresses == ["10.20.30.40"]


def test_network_option_puts_new_vms_on_that_port_group(engine: ESXiEngine, vpx: testing.Vcsim) -> None:
    host = host_spec(vpx, name="esxi-dvpg", network="DC0_DVPG0")
    made = []
    try:
        for vm_uuid, image in (("esxi-t-net1", testing.TEMPLATE), ("esxi-t-net2", "[LocalDS_0] iso/debian-12.iso")):
            info = engine.vm_create(host=host, spec=VMSpec(vm_uuid, image, 1, 128, 2), progress=lambda p, m="": None)
            made.append((vm_uuid, info.ref))
            si, vm = _vm_object(vpx, vm_uuid)
            assert [n.name for n in vm.network] == ["DC0_DVPG0"], (vm_uuid, [n.name for n in vm.network])
            Disconnect(si)
        with pytest.raises(errors.BadRequest, match="no port group 'nowhere'"):
            engine.vm_create(host=host_spec(vpx, name="esxi-nonet", network="nowhere"),
                             spec=VMSpec("esxi-t-net3", "[LocalDS_0] iso/debian-12.iso", 1, 128, 2),
                             progress=lambda p, m="": None)
    finally:
        for vm_uuid, ref in made:
            engine.vm_delete(host=host, vm_uuid=vm_uuid, ref=ref, progress=lambda p, m="": None)
