"""vm_uuid <-> libvirt names and refs, and the names of the volumes and rules the engine owns.

A VM's domain is named after its ``vm_uuid``; its ``ref`` is the domain UUID. Volumes of a VM
live in the host's pool as ``<vm_uuid>.root.qcow2`` (system disk, an overlay of its image) and
``<vm_uuid>.disk-<name>.qcow2`` (extra disks), so images are the pool's other files.
"""

from __future__ import annotations

import re

import libvirt

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
NAMESPACE = "https://openidcs.org/xmlns/libvirt/1"
IMAGE_SUFFIXES = (".qcow2", ".img", ".raw")
ISO_SUFFIX = ".iso"
KERNEL_SUFFIX = ".vmlinuz"
INITRD_SUFFIX = ".initrd"


def root_volume(vm_uuid: str) -> str:
    return f"{vm_uuid}.root.qcow2"


def disk_volume(vm_uuid: str, disk: str) -> str:
    return f"{vm_uuid}.disk-{disk}.qcow2"


def is_vm_volume(name: str) -> bool:
    """True for volumes the engine made for a VM (never offered as images)."""
    return ".root.qcow2" in name or ".disk-" in name


def owns_volume(vm_uuid: str, name: str) -> bool:
    return name == root_volume(vm_uuid) or name.startswith(f"{vm_uuid}.disk-")


def rule_comment(vm_uuid: str, protocol: str, host_port: int) -> str:
    """The comment naming one NAT rule in the engine's nftables table."""
    return f"idcs {vm_uuid} {protocol} {host_port}"


def domain(conn: libvirt.virConnect, vm_uuid: str, ref: str | None) -> libvirt.virDomain:
    """The VM's domain: by ``ref`` when it is a domain UUID, else by name (one round trip)."""
    if ref and UUID_RE.match(ref):
        try:
            return conn.lookupByUUIDString(ref)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
    return conn.lookupByName(vm_uuid)
