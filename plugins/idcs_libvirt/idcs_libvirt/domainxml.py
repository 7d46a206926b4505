"""Domain XML built and read with xml.etree (never by string concatenation of user input)."""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from idcs_libvirt.naming import NAMESPACE

ET.register_namespace("idcs", NAMESPACE)


@dataclass
class DomainPlan:
    """What a new domain is made of."""

    name: str
    cpu_num: int
    ram_mb: int
    pool: str
    root_volume: str
    network: str
    mac: str
    os_name: str
    boot_cdrom: str | None = None  # a path: boot from this ISO (created from an ISO)
    kernel: str | None = None  # direct kernel boot (image with a kernel beside it)
    initrd: str | None = None
    cmdline: str = "console=tty0 console=ttyS0"
    vnc_listen: str = "127.0.0.1"
    max_cpu: int = 0  # 0: as cpu_num
    extra: dict[str, str] = field(default_factory=dict)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


def build(plan: DomainPlan) -> str:
    """The XML of a new domain (type qemu: TCG; libvirt picks the emulator)."""
    dom = ET.Element("domain", {"type": "qemu"})
    _sub(dom, "name", plan.name)
    meta = _sub(dom, "metadata")
    mine = _sub(meta, f"{{{NAMESPACE}}}vm")
    _sub(mine, f"{{{NAMESPACE}}}os", plan.os_name)
    _sub(dom, "memory", str(plan.ram_mb), unit="MiB")
    _sub(dom, "currentMemory", str(plan.ram_mb), unit="MiB")
    _sub(dom, "vcpu", str(max(plan.max_cpu, plan.cpu_num)), placement="static", current=str(plan.cpu_num))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    if plan.kernel:
        _sub(os_el, "kernel", plan.kernel)
        if plan.initrd:
            _sub(os_el, "initrd", plan.initrd)
        _sub(os_el, "cmdline", plan.cmdline)
    _sub(os_el, "boot", dev="cdrom" if plan.boot_cdrom else "hd")
    if plan.boot_cdrom:
        _sub(os_el, "boot", dev="hd")
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    dev = _sub(dom, "devices")
    disk = _sub(dev, "disk", type="volume", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", pool=plan.pool, volume=plan.root_volume)
    _sub(disk, "target", dev="vda", bus="virtio")
    dev.append(cdrom_element(plan.boot_cdrom))
    nic = _sub(dev, "interface", type="network")
    _sub(nic, "mac", address=plan.mac)
    _sub(nic, "source", network=plan.network)
    _sub(nic, "model", type="virtio")
    serial = _sub(dev, "serial", type="pty")
    _sub(serial, "target", port="0")
    console = _sub(dev, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    agent = _sub(dev, "channel", type="unix")
    _sub(agent, "target", type="virtio", name="org.qemu.guest_agent.0")
    # a random password nobody knows: QEMU then requires VNC authentication, and vm_console
    # sets a fresh one per open (QEMU can change it only when it started with one)
    graphics = _sub(dev, "graphics", type="vnc", port="-1", autoport="yes", passwd=secrets.token_urlsafe(6)[:8])
    _sub(graphics, "listen", type="address", address=plan.vnc_listen)
    video = _sub(dev, "video")
    _sub(video, "model", type="vga")
    return ET.tostring(dom, encoding="unicode")


def cdrom_element(path: str | None) -> ET.Element:
    """The CD-ROM (IDE, hdc), with ``path`` inserted or empty."""
    cd = ET.Element("disk", {"type": "file", "device": "cdrom"})
    _sub(cd, "driver", name="qemu", type="raw")
    if path:
        _sub(cd, "source", file=path)
    _sub(cd, "target", dev="hdc", bus="ide")
    _sub(cd, "readonly")
    return cd


def extra_disk_element(pool: str, volume: str, target: str, serial: str) -> ET.Element:
    """An extra virtio disk from the pool; ``serial`` is how the guest recognises it."""
    disk = ET.Element("disk", {"type": "volume", "device": "disk"})
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", pool=pool, volume=volume)
    _sub(disk, "target", dev=target, bus="virtio")
    _sub(disk, "serial", serial)
    return disk


def graphics_element(listen: str, password: str, valid_to: str) -> ET.Element:
    """The VNC device with a new password (for ``updateDeviceFlags``)."""
    graphics = ET.Element("graphics", {"type": "vnc", "port": "-1", "autoport": "yes", "passwd": password,
                                       "passwdValidTo": valid_to})
    _sub(graphics, "listen", type="address", address=listen)
    return graphics


@dataclass
class DomainFacts:
    """What the engine reads back from a domain's XML."""

    name: str
    uuid: str
    os_name: str | None
    cpu_num: int
    ram_mb: int
    macs: list[str]
    networks: list[str]
    disks: dict[str, tuple[str, str]]  # target dev -> (pool, volume) of volume disks
    disk_serials: dict[str, str]  # target dev -> serial
    cdrom: str | None  # path of the inserted ISO
    vnc_port: int | None
    vnc_listen: str | None
    hdd_bytes: int | None = None  # the system disk's size (filled in by the engine's facts cache)


def parse(xml: str) -> DomainFacts:
    root = ET.fromstring(xml)
    vcpu = root.find("vcpu")
    cpu = int((vcpu.get("current") or vcpu.text or "1") if vcpu is not None else 1)
    mem = root.find("currentMemory")
    if mem is None:
        mem = root.find("memory")
    ram_kib = int(mem.text or "0") if mem is not None else 0
    unit = mem.get("unit", "KiB") if mem is not None else "KiB"
    ram_mb = ram_kib // 1024 if unit in ("KiB", "k") else ram_kib if unit in ("MiB", "M") else ram_kib * 1024
    os_el = root.find(f"metadata/{{{NAMESPACE}}}vm/{{{NAMESPACE}}}os")
    disks: dict[str, tuple[str, str]] = {}
    serials: dict[str, str] = {}
    cdrom = None
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        dev = target.get("dev", "") if target is not None else ""
        if disk.get("device") == "cdrom":
            cdrom = source.get("file") if source is not None else None
        elif source is not None and source.get("volume"):
            disks[dev] = (source.get("pool", ""), source.get("volume", ""))
        serial = disk.find("serial")
        if serial is not None and serial.text:
            serials[dev] = serial.text
    macs, nets = [], []
    for nic in root.findall("devices/interface"):
        mac = nic.find("mac")
        if mac is not None:
            macs.append(mac.get("address", "").lower())
        src = nic.find("source")
        nets.append(src.get("network", "") if src is not None else "")
    port, listen = None, None
    graphics = root.find("devices/graphics[@type='vnc']")
    if graphics is not None:
        if graphics.get("port") and graphics.get("port") != "-1":
            port = int(graphics.get("port", "0"))
        listen = graphics.get("listen")
        lst = graphics.find("listen")
        if lst is not None and lst.get("address"):
            listen = lst.get("address")
    return DomainFacts(name=root.findtext("name", ""), uuid=root.findtext("uuid", ""),
                       os_name=os_el.text if os_el is not None else None, cpu_num=cpu, ram_mb=ram_mb, macs=macs,
                       networks=nets, disks=disks, disk_serials=serials, cdrom=cdrom, vnc_port=port,
                       vnc_listen=listen)


def to_string(el: ET.Element) -> str:
    return ET.tostring(el, encoding="unicode")
