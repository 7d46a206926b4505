"""Create, update, delete, power, status, list."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import libvirt

from idcs_core.errors import BadRequest, Conflict, NotSupported, VMCreateFailed, VMNotFound, VMOperationFailed
from idcs_core.types import ImageKind, PowerAction, Progress, VMInfo, VMSpec
from idcs_libvirt import domainxml, images, naming, network
from idcs_libvirt.host import Settings

GIB = 1024**3
STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: ("stopped", "nostate"),
    libvirt.VIR_DOMAIN_RUNNING: ("running", "running"),
    libvirt.VIR_DOMAIN_BLOCKED: ("running", "blocked"),
    libvirt.VIR_DOMAIN_PAUSED: ("paused", "paused"),
    libvirt.VIR_DOMAIN_SHUTDOWN: ("running", "shutting-down"),
    libvirt.VIR_DOMAIN_SHUTOFF: ("stopped", "shutoff"),
    libvirt.VIR_DOMAIN_CRASHED: ("stopped", "crashed"),
    libvirt.VIR_DOMAIN_PMSUSPENDED: ("paused", "pmsuspended"),
}
UNDEFINE = (libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


class FactsCache:
    """Domain facts (XML: vCPUs, memory, MACs, networks, image; the system disk's size) by
    domain UUID, so that a VM list is one call for every domain's state (no QEMU monitor round
    trip per domain) plus the leases. Every status, power, update or restore of a VM re-reads
    its entry; a domain changed outside OpenIDCS shows its new sizes after its next status."""

    def __init__(self) -> None:
        self._facts: dict[str, domainxml.DomainFacts] = {}
        self._lock = threading.Lock()

    def get(self, conn: libvirt.virConnect, dom: libvirt.virDomain) -> domainxml.DomainFacts:
        key = dom.UUIDString()
        with self._lock:
            found = self._facts.get(key)
        if found is None:
            found = domainxml.parse(dom.XMLDesc(0))
            found.hdd_bytes = disk_capacity(conn, dom, found)
            with self._lock:
                self._facts[key] = found
        return found

    def forget(self, dom: libvirt.virDomain | None) -> None:
        if dom is not None:
            with self._lock, contextlib.suppress(libvirt.libvirtError):
                self._facts.pop(dom.UUIDString(), None)


def _state(dom: libvirt.virDomain) -> tuple[str, str]:
    state, _reason = dom.state()
    return STATES.get(state, ("stopped", str(state)))


def info(conn: libvirt.virConnect, dom: libvirt.virDomain, facts: FactsCache, with_ips: bool = True) -> VMInfo:
    """The VM as libvirt sees it now (live XML, state, disk size, addresses)."""
    facts.forget(dom)
    f = facts.get(conn, dom)
    status, power = _state(dom)
    hdd = round(f.hdd_bytes / GIB) if f.hdd_bytes else None
    ips = [a.address for a in network.vm_addresses(conn, f.macs, f.networks)] if with_ips else []
    return VMInfo(vm_uuid=f.name, status=status, power_state=power, vm_name=f.name, os_name=f.os_name,
                  cpu_num=f.cpu_num, ram_num=f.ram_mb, hdd_num=hdd, ip_addresses=ips, ref=f.uuid,
                  extra={"isos": [f.cdrom.rsplit("/", 1)[-1]] if f.cdrom else []})


def disk_capacity(conn: libvirt.virConnect, dom: libvirt.virDomain, f: domainxml.DomainFacts) -> int | None:
    """Bytes of the system disk (vda): from QEMU when running, else from its volume."""
    if "vda" not in f.disks:
        return None
    try:
        if dom.isActive():
            return int(dom.blockInfo("vda")[0])
        pool, vol = f.disks["vda"]
        return int(conn.storagePoolLookupByName(pool).storageVolLookupByName(vol).info()[1])
    except libvirt.libvirtError:
        return None


def vm_list(conn: libvirt.virConnect, facts: FactsCache) -> list[VMInfo]:
    """Every domain: one call for all their states (libvirt answers it from its own memory,
    without asking each QEMU), sizes from the facts cache, addresses from each network's
    reservations and leases."""
    stats = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
    rows = [(st, facts.get(conn, dom)) for dom, st in stats]
    macs = network.addresses_by_mac(conn, {n for _s, f in rows for n in f.networks if n})
    out = []
    for st, f in rows:
        status, power = STATES.get(st.get("state.state", 5), ("stopped", "unknown"))
        out.append(VMInfo(vm_uuid=f.name, status=status, power_state=power, vm_name=f.name, os_name=f.os_name,
                          cpu_num=f.cpu_num, ram_num=f.ram_mb,
                          hdd_num=round(f.hdd_bytes / GIB) if f.hdd_bytes else None,
                          ip_addresses=[ip for mac in f.macs for ip in macs.get(mac, [])], ref=f.uuid))
    return out


def vm_create(conn: libvirt.virConnect, settings: Settings, spec: VMSpec, facts: FactsCache,
              progress: Progress) -> VMInfo:
    """A copy-on-write overlay of the image (or an empty disk + the ISO in the CD-ROM), a fixed
    address in the network's DHCP, the domain defined and started."""
    with contextlib.suppress(libvirt.libvirtError):
        conn.lookupByName(spec.vm_uuid)
        raise Conflict(f"a domain named {spec.vm_uuid!r} already exists on the host")
    if spec.cpu_num < 1 or spec.ram_num < 16 or spec.hdd_num < 1:
        raise BadRequest("cpu_num >= 1, ram_num >= 16 MB and hdd_num >= 1 GB are needed")
    listed = {i.file: i.kind for i in images.list_images(conn, settings.pool)}
    kind = listed.get(spec.os_name)
    if kind not in (ImageKind.IMAGE, ImageKind.ISO):
        raise BadRequest(f"{spec.os_name!r} is not an image or ISO of pool {settings.pool!r}")
    pool = images.pool(conn, settings.pool)
    made: list[Any] = []
    mac = network.new_mac()
    try:
        progress(10, "creating the system disk")
        root = _root_volume(pool, spec, kind)
        made.append(root)
        progress(40, "reserving an address")
        network.reserve(conn, settings.network, spec.vm_uuid, mac)
        made.append("reservation")
        plan = domainxml.DomainPlan(
            name=spec.vm_uuid, cpu_num=spec.cpu_num, ram_mb=spec.ram_num, pool=settings.pool,
            root_volume=naming.root_volume(spec.vm_uuid), network=settings.network, mac=mac, os_name=spec.os_name,
            vnc_listen=settings.vnc_listen)
        if kind == ImageKind.ISO:
            plan.boot_cdrom = images.volume(conn, settings.pool, spec.os_name, ImageKind.ISO).path()
        else:
            plan.kernel = images.sidecar(conn, settings.pool, spec.os_name, naming.KERNEL_SUFFIX)
            plan.initrd = images.sidecar(conn, settings.pool, spec.os_name, naming.INITRD_SUFFIX)
        progress(60, "defining the domain")
        dom = conn.defineXML(domainxml.build(plan))
        made.append(dom)
        progress(80, "starting")
        dom.create()
        progress(100, "running")
        return info(conn, dom, facts)
    except BaseException as exc:
        _undo(conn, settings, made, mac)
        if isinstance(exc, libvirt.libvirtError):
            raise VMCreateFailed(f"create {spec.vm_uuid}: {exc.get_error_message()}") from None
        raise


def _root_volume(pool: libvirt.virStoragePool, spec: VMSpec, kind: ImageKind) -> libvirt.virStorageVol:
    name = naming.root_volume(spec.vm_uuid)
    with contextlib.suppress(libvirt.libvirtError):
        pool.storageVolLookupByName(name).delete(0)  # left by an earlier failed attempt
    vol = ET_volume(name, spec.hdd_num, None)
    if kind == ImageKind.IMAGE:
        base = pool.storageVolLookupByName(spec.os_name)
        _t, capacity, _a = base.info()
        fmt = "qcow2" if spec.os_name.endswith(".qcow2") else "raw"
        vol = ET_volume(name, max(spec.hdd_num, -(-capacity // GIB)), (base.path(), fmt))
    return pool.createXML(vol, 0)


def ET_volume(name: str, size_gb: int, backing: tuple[str, str] | None) -> str:
    """Volume XML (qcow2, ``size_gb``), optionally an overlay of ``backing`` (path, format)."""
    import xml.etree.ElementTree as ET

    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="G").text = str(int(size_gb))
    target = ET.SubElement(vol, "target")
    ET.SubElement(target, "format", type="qcow2")
    if backing:
        store = ET.SubElement(vol, "backingStore")
        ET.SubElement(store, "path").text = backing[0]
        ET.SubElement(store, "format", type=backing[1])
    return ET.tostring(vol, encoding="unicode")


def _undo(conn: libvirt.virConnect, settings: Settings, made: list[Any], mac: str) -> None:
    for thing in reversed(made):
        with contextlib.suppress(libvirt.libvirtError):
            if isinstance(thing, libvirt.virDomain):
                with contextlib.suppress(libvirt.libvirtError):
                    thing.destroy()
                thing.undefineFlags(UNDEFINE)
            elif isinstance(thing, libvirt.virStorageVol):
                thing.delete(0)
            elif thing == "reservation":
                network.release(conn, settings.network, [mac])


def vm_update(conn: libvirt.virConnect, dom: libvirt.virDomain, spec: VMSpec, facts: FactsCache,
              progress: Progress) -> VMInfo:
    """CPU and RAM go into the persistent definition (they apply at the next boot if the VM runs);
    the disk grows live (block resize) or offline (volume resize). Shrinking a disk is refused."""
    f = domainxml.parse(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    running = dom.isActive()
    cfg = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    later = []
    if spec.hdd_num:
        current = disk_capacity(conn, dom, f) or 0
        wanted = spec.hdd_num * GIB
        if wanted < current:
            raise BadRequest(f"the disk is {current // GIB} GB: it cannot shrink to {spec.hdd_num} GB")
        if wanted > current:
            progress(20, f"growing the disk to {spec.hdd_num} GB")
            if running:
                dom.blockResize("vda", wanted, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
            else:
                pool, vol = f.disks["vda"]
                conn.storagePoolLookupByName(pool).storageVolLookupByName(vol).resize(wanted, 0)
    if spec.cpu_num and spec.cpu_num != f.cpu_num:
        progress(50, f"{spec.cpu_num} vCPUs" + (" from the next boot" if running else ""))
        dom.setVcpusFlags(spec.cpu_num, cfg | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
        dom.setVcpusFlags(spec.cpu_num, cfg)
        later.append("cpu")
    if spec.ram_num and spec.ram_num != f.ram_mb:
        progress(70, f"{spec.ram_num} MB of memory" + (" from the next boot" if running else ""))
        dom.setMemoryFlags(spec.ram_num * 1024, cfg | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
        dom.setMemoryFlags(spec.ram_num * 1024, cfg)
        later.append("ram")
    progress(100, "updated")
    facts.forget(dom)
    result = info(conn, dom, facts)
    persistent = domainxml.parse(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    result.cpu_num, result.ram_num = persistent.cpu_num, persistent.ram_mb
    if running and later:
        result.extra["applies_at_next_boot"] = later
    return result


def vm_delete(conn: libvirt.virConnect, settings: Settings, vm_uuid: str, ref: str, facts: FactsCache,
              progress: Progress) -> None:
    """Power off, drop the snapshots and the definition, the VM's volumes, its address
    reservation and its forwards. A VM already gone is fine."""
    try:
        dom = naming.domain(conn, vm_uuid, ref)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
        dom = None
    pools: set[str] = {settings.pool}
    if dom is not None:
        f = domainxml.parse(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        pools |= {p for p, _v in f.disks.values() if p}
        progress(10, "powering off")
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        progress(30, "removing the definition and its snapshots")
        for snap in dom.listAllSnapshots(0):
            with contextlib.suppress(libvirt.libvirtError):
                snap.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
        facts.forget(dom)
        dom.undefineFlags(UNDEFINE)
        network.release(conn, settings.network, f.macs)
        vm_uuid = f.name
    progress(60, "deleting its volumes")
    for pool_name in pools:
        with contextlib.suppress(libvirt.libvirtError):
            pool = conn.storagePoolLookupByName(pool_name)
            pool.refresh(0)
            for vol in pool.listAllVolumes(0):
                if naming.owns_volume(vm_uuid, vol.name()):
                    vol.delete(0)
    if settings.is_local:
        with contextlib.suppress(Exception):
            network.Nft(settings).remove_vm(vm_uuid)
    progress(100, "deleted")


def vm_power(conn: libvirt.virConnect, settings: Settings, dom: libvirt.virDomain, action: PowerAction,
             facts: FactsCache) -> VMInfo:
    state, _ = dom.state()
    active = dom.isActive()
    if action == PowerAction.START:
        if state == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
        elif not active:
            dom.create()
    elif action == PowerAction.HARD_OFF:
        if active:
            dom.destroy()
    elif action == PowerAction.STOP:
        if active:
            _shutdown(dom, settings.stop_timeout)
    elif action == PowerAction.RESET:
        if not active:
            dom.create()
        else:
            if state == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()
            dom.reset(0)
    elif action == PowerAction.PAUSE:
        if not active:
            raise VMOperationFailed("the VM is not running: it cannot be paused")
        if state != libvirt.VIR_DOMAIN_PAUSED:
            dom.suspend()
    elif action == PowerAction.RESUME:
        if state == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
        elif not active:
            raise VMOperationFailed("the VM is not running: nothing to resume")
    else:
        raise NotSupported(f"power action {action}")
    return info(conn, dom, facts)


def _shutdown(dom: libvirt.virDomain, timeout: int) -> None:
    """ACPI power button; powered off after ``timeout`` seconds if the guest ignores it."""
    if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
        dom.resume()
    with contextlib.suppress(libvirt.libvirtError):
        dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not dom.isActive():
            return
        time.sleep(0.25)
    with contextlib.suppress(libvirt.libvirtError):
        dom.destroy()


def set_password(dom: libvirt.virDomain, username: str, password: str) -> None:
    """Set a guest account's password through the QEMU guest agent (the VM must be running)."""
    if not dom.isActive():
        raise VMOperationFailed("the VM is not running: its guest agent cannot set a password")
    dom.setUserPassword(username, password, 0)


def lookup(conn: libvirt.virConnect, vm_uuid: str, ref: str | None) -> libvirt.virDomain:
    """The VM's domain, or VMNotFound."""
    try:
        return naming.domain(conn, vm_uuid, ref)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise VMNotFound(f"no domain {vm_uuid!r} on the host") from None
        raise
