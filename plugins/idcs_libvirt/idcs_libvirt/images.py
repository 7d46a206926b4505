"""Images and ISOs: the volumes of the host's pool."""

from __future__ import annotations

import libvirt

from idcs_core.errors import BadRequest
from idcs_core.types import ImageKind, OSImage
from idcs_libvirt import naming
from idcs_libvirt.client import active

FAMILIES = ("debian", "ubuntu", "centos", "rocky", "alma", "fedora", "alpine", "windows", "arch", "opensuse")


def _family(name: str) -> str:
    low = name.lower()
    return next((f for f in FAMILIES if f in low), "other")


def pool(conn: libvirt.virConnect, name: str) -> libvirt.virStoragePool:
    """The storage pool the host option names, started if it was not."""
    return active(conn.storagePoolLookupByName, name, libvirt.VIR_ERR_NO_STORAGE_POOL, "storage pool", "pool")


def list_images(conn: libvirt.virConnect, pool_name: str) -> list[OSImage]:
    """qcow2/img/raw volumes are images, .iso volumes ISOs; the engine's own VM volumes are left out."""
    p = pool(conn, pool_name)
    p.refresh(0)
    out = []
    for name in sorted(p.listVolumes()):
        if naming.is_vm_volume(name):
            continue
        if name.endswith(naming.IMAGE_SUFFIXES):
            out.append(OSImage(name=name.rsplit(".", 1)[0], file=name, family=_family(name), kind=ImageKind.IMAGE))
        elif name.lower().endswith(naming.ISO_SUFFIX):
            out.append(OSImage(name=name.rsplit(".", 1)[0], file=name, family=_family(name), kind=ImageKind.ISO))
    return out


def volume(conn: libvirt.virConnect, pool_name: str, name: str, kind: ImageKind) -> libvirt.virStorageVol:
    """The image or ISO volume ``name`` (one of the listed ones), else BadRequest."""
    listed = {i.file: i.kind for i in list_images(conn, pool_name)}
    if listed.get(name) != kind:
        what = "ISO" if kind == ImageKind.ISO else "image"
        raise BadRequest(f"{name!r} is not an {what} of pool {pool_name!r}")
    return pool(conn, pool_name).storageVolLookupByName(name)


def sidecar(conn: libvirt.virConnect, pool_name: str, image: str, suffix: str) -> str | None:
    """Path of ``<image><suffix>`` (a kernel or initramfs for direct boot) if the pool has it."""
    try:
        return str(pool(conn, pool_name).storageVolLookupByName(image + suffix).path())
    except libvirt.libvirtError:
        return None
