"""Virtual hardware of a VM: reading its disks and CD-ROMs, building device change specs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pyVmomi import vim

from idcs_core import errors

GB_IN_KB = 1024 * 1024
EXTRA_DISK_PREFIX = "idcs-disk-"
Dev = vim.vm.device
Change = vim.vm.device.VirtualDeviceSpec


def disks(devices: Iterable[Any]) -> list[Any]:
    return [d for d in devices or [] if isinstance(d, Dev.VirtualDisk)]


def disk_file(disk: Any) -> str:
    return str(getattr(disk.backing, "fileName", "") or "")


def extra_disk_name(disk: Any) -> str | None:
    """The API name of an extra disk this engine made (``idcs-disk-<name>.vmdk``), else None."""
    base = disk_file(disk).rsplit("/", 1)[-1]
    if base.startswith(EXTRA_DISK_PREFIX) and base.endswith(".vmdk"):
        return base[len(EXTRA_DISK_PREFIX):-len(".vmdk")]
    return None


def system_disk(devices: Iterable[Any]) -> Any | None:
    """The VM's first disk that is not an extra disk of the API."""
    return next((d for d in disks(devices) if extra_disk_name(d) is None), None)


def size_gb(disk: Any) -> int:
    return int((int(disk.capacityInKB or 0) + GB_IN_KB - 1) // GB_IN_KB)


def cdroms(devices: Iterable[Any]) -> list[Any]:
    return [d for d in devices or [] if isinstance(d, Dev.VirtualCdrom)]


def mounted_isos(devices: Iterable[Any]) -> list[str]:
    return [str(c.backing.fileName) for c in cdroms(devices)
            if isinstance(c.backing, Dev.VirtualCdrom.IsoBackingInfo) and c.backing.fileName]


def scsi_controller(devices: Iterable[Any]) -> Any | None:
    return next((d for d in devices or [] if isinstance(d, Dev.VirtualSCSIController)), None)


def free_unit(devices: Iterable[Any], controller_key: int) -> int:
    """The lowest unit number free on the controller (7 is the controller's own)."""
    used = {d.unitNumber for d in devices or [] if d.controllerKey == controller_key and d.unitNumber is not None}
    for unit in range(0, 64):
        if unit != 7 and unit not in used:
            return unit
    raise ValueError("no free unit on the disk controller")


def new_controller(key: int = -100) -> Any:
    ctrl = Dev.ParaVirtualSCSIController(key=key, busNumber=0, sharedBus="noSharing")
    return Change(operation=Change.Operation.add, device=ctrl)


def new_disk(controller_key: int, unit: int, size: int, file_name: str = "", create: bool = True,
             key: int = -200) -> Any:
    """A thin disk of ``size`` GB at ``file_name`` (``[ds]`` alone lets the host name it)."""
    backing = Dev.VirtualDisk.FlatVer2BackingInfo(fileName=file_name, diskMode="persistent", thinProvisioned=True)
    disk = Dev.VirtualDisk(key=key, controllerKey=controller_key, unitNumber=unit, backing=backing,
                           capacityInKB=size * GB_IN_KB)
    spec = Change(operation=Change.Operation.add, device=disk)
    if create:
        spec.fileOperation = Change.FileOperation.create
    return spec


def grow_disk(disk: Any, size: int) -> Any:
    disk.capacityInKB = size * GB_IN_KB
    return Change(operation=Change.Operation.edit, device=disk)


def remove(device: Any, destroy: bool = False) -> Any:
    spec = Change(operation=Change.Operation.remove, device=device)
    if destroy:
        spec.fileOperation = Change.FileOperation.destroy
    return spec


def new_cdrom(controller_key: int, iso_path: str, key: int = -300) -> Any:
    backing = Dev.VirtualCdrom.IsoBackingInfo(fileName=iso_path)
    connect = Dev.VirtualDevice.ConnectInfo(startConnected=True, connected=True, allowGuestControl=True)
    cdrom = Dev.VirtualCdrom(key=key, controllerKey=controller_key, unitNumber=0, backing=backing,
                             connectable=connect)
    return Change(operation=Change.Operation.add, device=cdrom)


def load_iso(cdrom: Any, iso_path: str | None) -> Any:
    """Insert ``iso_path`` into ``cdrom`` (None ejects it)."""
    if iso_path is None:
        cdrom.backing = Dev.VirtualCdrom.RemotePassthroughBackingInfo(deviceName="", exclusive=False)
        connected = False
    else:
        cdrom.backing = Dev.VirtualCdrom.IsoBackingInfo(fileName=iso_path)
        connected = True
    cdrom.connectable = Dev.VirtualDevice.ConnectInfo(startConnected=connected, connected=connected,
                                                      allowGuestControl=True)
    return Change(operation=Change.Operation.edit, device=cdrom)


def nic_backing(network: Any) -> Any:
    """The NIC backing for a port group: standard (vSwitch) or distributed (vDS)."""
    if isinstance(network, vim.dvs.DistributedVirtualPortgroup):
        switch = network.config.distributedVirtualSwitch
        if switch is None:
            raise errors.BadRequest(f"port group {network.name!r} belongs to no distributed switch")
        port = vim.dvs.PortConnection(portgroupKey=network.key, switchUuid=switch.uuid)
        return Dev.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port)
    return Dev.VirtualEthernetCard.NetworkBackingInfo(deviceName=network.name, network=network)


def nics(devices: Iterable[Any]) -> list[Any]:
    return [d for d in devices or [] if isinstance(d, Dev.VirtualEthernetCard)]


def move_nic(nic: Any, network: Any) -> Any:
    """Connect an existing NIC to another port group."""
    nic.backing = nic_backing(network)
    return Change(operation=Change.Operation.edit, device=nic)


def new_nic(network: Any, key: int = -400) -> Any:
    backing = nic_backing(network)
    connect = Dev.VirtualDevice.ConnectInfo(startConnected=True, connected=True, allowGuestControl=True)
    nic = Dev.VirtualVmxnet3(key=key, backing=backing, connectable=connect, addressType="generated")
    return Change(operation=Change.Operation.add, device=nic)
