"""The engine's own behaviour on real QEMU, beyond the kit: effects seen inside the guest
(CPU/RAM after an update, a grown disk), the ACPI shut-down, the guest-agent error, domain XML
safety, and forwards reconciled after they vanish from nftables behind the engine's back."""

from __future__ import annotations

import contextlib
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import httpx
import libvirt
import pytest
from idcs_libvirt import testing
from idcs_libvirt.engine import LibvirtEngine

from idcs_core import errors
from idcs_core.testing.backends import free_port
from idcs_core.types import HostSpec, NatRule, PowerAction, VMInfo, VMSpec


def _progress(percent: int, message: str = "") -> None:
    assert 0 <= percent <= 100


def _guest_info(conn: libvirt.virConnect, vm: str) -> dict[str, str]:
    text = testing.guest_http(conn, vm, "/cgi-bin/info").text
    return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)


@pytest.fixture(scope="module")
def vm(engine: LibvirtEngine, host: HostSpec, backend: testing.Backend) -> Iterator[VMInfo]:
    spec = VMSpec(vm_uuid=f"lvt-vm-{int(time.time()) % 100000}", os_name=testing.IMAGE, cpu_num=1, ram_num=128,
                  hdd_num=1)
    info = engine.vm_create(host=host, spec=spec, progress=_progress)
    yield info
    engine.vm_delete(host=host, vm_uuid=spec.vm_uuid, ref=info.ref or spec.vm_uuid, progress=_progress)
    conn = backend.connect()
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName(spec.vm_uuid)
    pool = conn.storagePoolLookupByName(testing.POOL)
    pool.refresh(0)
    assert not [v for v in pool.listVolumes() if v.startswith(spec.vm_uuid)], "delete left volumes behind"
    conn.close()


def test_create_gives_a_uuid_ref_a_cow_overlay_and_a_running_guest(vm: VMInfo, conn: libvirt.virConnect) -> None:
    dom = conn.lookupByName(vm.vm_uuid)
    assert vm.ref == dom.UUIDString() and vm.status == "running"
    root = ET.fromstring(dom.XMLDesc(0))
    assert root.get("type") == "qemu"
    vol = conn.storagePoolLookupByName(testing.POOL).storageVolLookupByName(f"{vm.vm_uuid}.root.qcow2")
    backing = ET.fromstring(vol.XMLDesc(0)).findtext("backingStore/path")
    assert backing and backing.endswith(testing.IMAGE), "the system disk is not an overlay of the image"
    assert _guest_info(conn, vm.vm_uuid)["boots"] == "1"


def test_update_applies_cpu_ram_at_next_boot_and_grows_the_disk(engine: LibvirtEngine, host: HostSpec,
                                                                 vm: VMInfo, conn: libvirt.virConnect) -> None:
    ref = vm.ref or vm.vm_uuid
    updated = engine.vm_update(host=host, spec=VMSpec(vm_uuid=vm.vm_uuid, os_name=testing.IMAGE, cpu_num=2,
                                                      ram_num=192, hdd_num=2, ref=ref), progress=_progress)
    assert (updated.cpu_num, updated.ram_num, updated.hdd_num) == (2, 192, 2)
    assert set(updated.extra["applies_at_next_boot"]) == {"cpu", "ram"}  # declared: the VM was running
    assert _guest_info(conn, vm.vm_uuid)["cpus"] == "1"  # not yet
    with pytest.raises(errors.BadRequest):  # a disk never shrinks
        engine.vm_update(host=host, spec=VMSpec(vm_uuid=vm.vm_uuid, os_name=testing.IMAGE, cpu_num=2, ram_num=192,
                                                hdd_num=1, ref=ref), progress=_progress)
    engine.vm_power(host=host, vm_uuid=vm.vm_uuid, ref=ref, action=PowerAction.HARD_OFF)
    engine.vm_power(host=host, vm_uuid=vm.vm_uuid, ref=ref, action=PowerAction.START)
    seen = _guest_info(conn, vm.vm_uuid)
    assert seen["cpus"] == "2"
    assert 150 * 1024 < int(seen["mem_kb"]) <= 192 * 1024, seen
    assert engine.vm_status(host=host, vm_uuid=vm.vm_uuid, ref=ref).hdd_num == 2


def test_graceful_stop_is_an_acpi_shutdown_the_guest_obeys(engine: LibvirtEngine, host: HostSpec, vm: VMInfo,
                                                          conn: libvirt.virConnect) -> None:
    ref = vm.ref or vm.vm_uuid
    _guest_info(conn, vm.vm_uuid)  # up
    started = time.monotonic()
    assert engine.vm_power(host=host, vm_uuid=vm.vm_uuid, ref=ref, action=PowerAction.STOP).status == "stopped"
    # the guest powered itself off on the power button, well before the forced power-off
    assert time.monotonic() - started < host.options["stop_timeout"] - 2
    reason = conn.lookupByName(vm.vm_uuid).state()[1]
    assert reason == libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN, f"shut off for reason {reason}, not by the guest"
    engine.vm_power(host=host, vm_uuid=vm.vm_uuid, ref=ref, action=PowerAction.START)


def test_password_without_guest_agent_is_a_clear_error(engine: LibvirtEngine, host: HostSpec, vm: VMInfo) -> None:
    with pytest.raises(errors.NotSupported, match="guest agent"):
        engine.vm_set_password(host=host, vm_uuid=vm.vm_uuid, ref=vm.ref or vm.vm_uuid, username="root",
                               password="S3cret-pass")


def test_forward_removed_behind_the_engines_back_is_reconciled(engine: LibvirtEngine, host: HostSpec,
                                                               vm: VMInfo, conn: libvirt.virConnect) -> None:
    ref, port = vm.ref or vm.vm_uuid, free_port()
    rule = NatRule(host_port=port, vm_port=80)
    _guest_info(conn, vm.vm_uuid)  # up
    engine.nat_add(host=host, vm_uuid=vm.vm_uuid, ref=ref, rule=rule, progress=_progress)
    try:
        assert testing.HTTP_BODY in httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text
        listing = subprocess.run(["nft", "list", "table", "ip", "idcs_libvirt"], capture_output=True, text=True,
                                 check=True).stdout
        assert f'comment "idcs {vm.vm_uuid} tcp {port}"' in listing
        subprocess.run(["nft", "flush", "table", "ip", "idcs_libvirt"], check=True)  # behind its back
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=3)
        engine.nat_sync(host=host, vm_uuid=vm.vm_uuid, ref=ref, rules=[rule])
        assert testing.HTTP_BODY in httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text
        with pytest.raises(errors.Conflict):  # a port held by a program on the host
            with contextlib.closing(__import__("socket").socket()) as sock:
                sock.bind(("0.0.0.0", 0))
                sock.listen()
                engine.nat_add(host=host, vm_uuid=vm.vm_uuid, ref=ref,
                               rule=NatRule(host_port=sock.getsockname()[1], vm_port=80), progress=_progress)
    finally:
        engine.nat_sync(host=host, vm_uuid=vm.vm_uuid, ref=ref, rules=[])
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=3)


def test_bad_image_and_hostile_names_never_reach_the_domain_xml(engine: LibvirtEngine, host: HostSpec) -> None:
    with pytest.raises(errors.BadRequest):
        engine.vm_create(host=host, spec=VMSpec(vm_uuid="lvt-bad", os_name="../../etc/passwd", cpu_num=1,
                                                ram_num=64, hdd_num=1), progress=_progress)
    from idcs_libvirt import domainxml

    xml = domainxml.build(domainxml.DomainPlan(name="a'<b>&", cpu_num=1, ram_mb=64, pool="p", root_volume="v",
                                               network="n", mac="52:54:00:00:00:01", os_name="x</os><evil/>"))
    root = ET.fromstring(xml)  # still one well-formed domain, the values kept as text
    assert root.findtext("name") == "a'<b>&" and root.find(".//evil") is None


def test_libvirtd_killed_means_offline_then_back(engine: LibvirtEngine, host: HostSpec, vm: VMInfo,
                                                 backend: testing.Backend) -> None:
    assert engine.host_status(host=host).online
    backend.kill_libvirtd()
    try:
        started = time.monotonic()
        with pytest.raises(errors.HostUnreachable):
            engine.host_status(host=host)
        assert time.monotonic() - started < 3
    finally:
        backend.start_libvirtd()
    status = engine.host_status(host=host)  # the cached connection is re-opened
    assert status.online and status.vms_count and status.vms_count >= 1
    assert engine.vm_status(host=host, vm_uuid=vm.vm_uuid, ref=vm.ref or vm.vm_uuid).status == "running"


def test_create_from_an_iso_boots_the_cdrom_over_an_empty_disk(engine: LibvirtEngine, host: HostSpec,
                                                              conn: libvirt.virConnect) -> None:
    spec = VMSpec(vm_uuid=f"lvt-iso-{int(time.time()) % 100000}", os_name=testing.ISO, cpu_num=1, ram_num=64,
                  hdd_num=2)
    info = engine.vm_create(host=host, spec=spec, progress=_progress)
    try:
        root = ET.fromstring(conn.lookupByName(spec.vm_uuid).XMLDesc(0))
        assert [b.get("dev") for b in root.findall("os/boot")] == ["cdrom", "hd"]
        cdrom = root.find("devices/disk[@device='cdrom']/source")
        assert cdrom is not None and cdrom.get("file", "").endswith(testing.ISO)
        vol = conn.storagePoolLookupByName(testing.POOL).storageVolLookupByName(f"{spec.vm_uuid}.root.qcow2")
        assert ET.fromstring(vol.XMLDesc(0)).find("backingStore/path") is None  # empty, not an overlay
        assert info.hdd_num == 2 and info.extra["isos"] == [testing.ISO]
    finally:
        engine.vm_delete(host=host, vm_uuid=spec.vm_uuid, ref=info.ref or spec.vm_uuid, progress=_progress)
