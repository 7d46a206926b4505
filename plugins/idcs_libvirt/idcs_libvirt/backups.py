"""Backups are libvirt snapshots (internal qcow2 snapshots: disks, and memory of a running VM)."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

import libvirt

from idcs_core.errors import NotFound
from idcs_core.types import BackupInfo, Progress


def _info(vm_uuid: str, snap: libvirt.virDomainSnapshot) -> BackupInfo:
    root = ET.fromstring(snap.getXMLDesc(0))
    created = root.findtext("creationTime")
    when = dt.datetime.fromtimestamp(int(created), dt.UTC).isoformat() if created else None
    return BackupInfo(backup_name=snap.getName(), vm_uuid=vm_uuid, description=root.findtext("description") or "",
                      created_at=when)


def backup_create(dom: libvirt.virDomain, vm_uuid: str, name: str, description: str,
                  progress: Progress) -> BackupInfo:
    snap = ET.Element("domainsnapshot")
    ET.SubElement(snap, "name").text = name
    ET.SubElement(snap, "description").text = description
    progress(10, "taking the snapshot" + (" (with the running VM's memory)" if dom.isActive() else ""))
    made = dom.snapshotCreateXML(ET.tostring(snap, encoding="unicode"), 0)
    progress(100, "snapshot taken")
    return _info(vm_uuid, made)


def _snapshot(dom: libvirt.virDomain, name: str) -> libvirt.virDomainSnapshot:
    try:
        return dom.snapshotLookupByName(name, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            raise NotFound(f"no backup {name!r}") from None
        raise


def backup_restore(dom: libvirt.virDomain, name: str, progress: Progress) -> None:
    snap = _snapshot(dom, name)
    progress(20, "reverting to the snapshot")
    dom.revertToSnapshot(snap, libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE)
    progress(100, "reverted")


def backup_delete(dom: libvirt.virDomain, name: str) -> None:
    try:
        snap = dom.snapshotLookupByName(name, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            return
        raise
    snap.delete(0)


def backup_list(conn: libvirt.virConnect) -> list[BackupInfo]:
    out = []
    for dom in conn.listAllDomains(0):
        for snap in dom.listAllSnapshots(0):
            out.append(_info(dom.name(), snap))
    return out
