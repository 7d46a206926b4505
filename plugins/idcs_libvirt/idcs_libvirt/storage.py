"""Extra volumes (virtio, hot-plugged when the VM runs) and the ISO in the CD-ROM."""

from __future__ import annotations

import contextlib
import time

import libvirt

from idcs_core.errors import BadRequest
from idcs_core.types import DiskSpec, ImageKind, Progress
from idcs_libvirt import domainxml, images, naming
from idcs_libvirt.host import Settings
from idcs_libvirt.lifecycle import ET_volume

LIVE_AND_CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG


def _flags(dom: libvirt.virDomain) -> int:
    return libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0)


def _target_of(dom: libvirt.virDomain, volume: str, inactive: bool = False) -> str | None:
    f = domainxml.parse(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0))
    return next((dev for dev, (_p, v) in f.disks.items() if v == volume), None)


def disk_attach(conn: libvirt.virConnect, settings: Settings, dom: libvirt.virDomain, vm_uuid: str,
                disk: DiskSpec, progress: Progress) -> None:
    if disk.size_gb < 1:
        raise BadRequest("a disk needs at least 1 GB")
    pool = images.pool(conn, settings.pool)
    name = naming.disk_volume(vm_uuid, disk.name)
    try:
        pool.storageVolLookupByName(name)
    except libvirt.libvirtError:
        progress(20, f"creating the {disk.size_gb} GB volume {disk.name}")
        pool.createXML(ET_volume(name, disk.size_gb, None), 0)
    if _target_of(dom, name) and _target_of(dom, name, inactive=True):
        return  # attached already
    used = set(domainxml.parse(dom.XMLDesc(0)).disks) | set(
        domainxml.parse(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).disks)
    target = next(f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz" if f"vd{c}" not in used)
    progress(60, f"attaching {disk.name} as {target}" + (" (hot-plug)" if dom.isActive() else ""))
    xml = domainxml.to_string(domainxml.extra_disk_element(settings.pool, name, target, disk.name))
    dom.attachDeviceFlags(xml, _flags(dom))


def disk_detach(conn: libvirt.virConnect, settings: Settings, dom: libvirt.virDomain, vm_uuid: str,
                disk_name: str, progress: Progress) -> None:
    name = naming.disk_volume(vm_uuid, disk_name)
    live, persistent = _target_of(dom, name), _target_of(dom, name, inactive=True)
    if not live and not persistent:
        return
    target = live or persistent
    xml = domainxml.to_string(domainxml.extra_disk_element(settings.pool, name, str(target), disk_name))
    progress(30, f"detaching {disk_name}")
    if persistent:
        dom.detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    if live and dom.isActive():
        dom.detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        deadline = time.monotonic() + 30  # the guest releases a hot-unplugged disk on its own time
        while time.monotonic() < deadline and _target_of(dom, name):
            time.sleep(0.3)
        if _target_of(dom, name):
            raise BadRequest(f"the guest did not release {disk_name} within 30 s; try again or stop the VM")


def disk_delete(conn: libvirt.virConnect, settings: Settings, dom: libvirt.virDomain | None, vm_uuid: str,
                disk_name: str, progress: Progress) -> None:
    if dom is not None:
        disk_detach(conn, settings, dom, vm_uuid, disk_name, progress)
    progress(70, f"deleting the volume {disk_name}")
    with contextlib.suppress(libvirt.libvirtError):
        images.pool(conn, settings.pool).storageVolLookupByName(naming.disk_volume(vm_uuid, disk_name)).delete(0)


def _set_cdrom(dom: libvirt.virDomain, path: str | None) -> None:
    xml = domainxml.to_string(domainxml.cdrom_element(path))
    dom.updateDeviceFlags(xml, _flags(dom) | libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE)


def iso_mount(conn: libvirt.virConnect, settings: Settings, dom: libvirt.virDomain, iso_name: str) -> None:
    vol = images.volume(conn, settings.pool, iso_name, ImageKind.ISO)
    _set_cdrom(dom, vol.path())


def iso_unmount(conn: libvirt.virConnect, settings: Settings, dom: libvirt.virDomain, iso_name: str) -> None:
    current = domainxml.parse(dom.XMLDesc(0)).cdrom
    if current and current.rsplit("/", 1)[-1] == iso_name:
        _set_cdrom(dom, None)
