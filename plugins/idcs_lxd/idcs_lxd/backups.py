"""Backups as exported LXD instance backups: tarballs in a backup directory.

Why export files rather than snapshots: a snapshot lives and dies with its
instance and its pool, while an exported backup survives deleting the VM (a
restore brings it back), can be copied off the host, and works the same on
every storage driver. Both LXD 5.0 and Incus make and import them.

Layout: ``<backup_dir>/<vm_uuid>/<backup_name>.tar.gz`` plus ``<backup_name>.json``
(description, creation time, size, server kind). ``backup_dir`` is the host option
``backup_dir``, else ``$IDCS_DATA_DIR/lxd-backups/<host name>``, else
``~/.local/share/idcs/lxd-backups/<host name>``. The files are on the machine that
runs OpenIDCS, so remote (https) hosts are backed up the same way.

Create: ``POST /instances/<n>/backups`` (instance only, gzip), wait, stream the
export into the file, delete the server-side copy.

Restore: import the tarball under a temporary name, give it the VM's *current*
limits, NAT forwards and extra disks (the core's records stay true), then
replace the VM with it and start it if the VM was running. The data is the
backup's; a VM that no longer exists is simply brought back.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

from pylxd import Client
from pylxd import exceptions as lxd_exc

from idcs_core import errors
from idcs_core.types import BackupInfo, HostSpec, Progress, VMInfo
from idcs_lxd import instances, lifecycle
from idcs_lxd.client import OperationFailed, run_async
from idcs_lxd.host import server_kind
from idcs_lxd.network import NAT_PREFIX
from idcs_lxd.storage import DISK_PREFIX

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$")
SUFFIX = ".tar.gz"
CARRIED_CONFIG = ("limits.cpu", "limits.memory")


def _noop(percent: int, message: str = "") -> None:
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "host"


def backup_dir(host: HostSpec) -> Path:
    configured = host.options.get("backup_dir")
    if configured:
        return Path(configured).expanduser()
    data = os.environ.get("IDCS_DATA_DIR")
    base = Path(data).expanduser() if data else Path("~/.local/share/idcs").expanduser()
    return base / "lxd-backups" / _slug(host.name)


def _check(name: str, what: str) -> str:
    if not _SAFE.match(name or "") or ".." in name:
        raise errors.BadRequest(f"invalid {what} {name!r}: letters, digits and _.:@+- only")
    return name


def _paths(host: HostSpec, vm_uuid: str, backup_name: str) -> tuple[Path, Path]:
    folder = backup_dir(host) / _check(vm_uuid, "vm_uuid")
    _check(backup_name, "backup name")
    return folder / f"{backup_name}{SUFFIX}", folder / f"{backup_name}.json"


def _info(vm_uuid: str, backup_name: str, meta: dict[str, Any], archive: Path) -> BackupInfo:
    size = archive.stat().st_size if archive.exists() else meta.get("size_bytes")
    return BackupInfo(backup_name=backup_name, vm_uuid=vm_uuid, description=str(meta.get("description", "")),
                      size_bytes=size, created_at=meta.get("created_at"))


def backup_create(client: Client, host: HostSpec, vm_uuid: str, backup_name: str, description: str,
                  progress: Progress = _noop) -> BackupInfo:
    archive, sidecar = _paths(host, vm_uuid, backup_name)
    inst = instances.get(client, vm_uuid)
    if archive.exists():
        raise errors.Conflict(f"backup {backup_name} of {vm_uuid} already exists")
    archive.parent.mkdir(parents=True, exist_ok=True)
    remote = f"idcs-{uuid.uuid4().hex[:12]}"
    expires = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)).isoformat()
    progress(10, "making the backup on the host")
    node = client.api.instances[vm_uuid].backups
    run_async(client, node.post(json={"name": remote, "instance_only": True, "optimized_storage": False,
                                      "compression_algorithm": "gzip", "expires_at": expires}), timeout=3600)
    partial = archive.with_suffix(".part")
    try:
        progress(50, "downloading the backup")
        response = node[remote].export.get(is_api=False, stream=True, timeout=(5, 300))
        with open(partial, "wb") as fh:
            for chunk in response.iter_content(1 << 20):
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, archive)
    finally:
        partial.unlink(missing_ok=True)
        try:
            run_async(client, node[remote].delete(), timeout=300)
        except (lxd_exc.LXDAPIException, OperationFailed):
            pass  # it expires by itself within a day
    meta = {"backup_name": backup_name, "vm_uuid": vm_uuid, "description": description or "",
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "size_bytes": archive.stat().st_size, "server": server_kind(client),
            "instance_type": inst.get("type"), "format": "lxd-instance-backup"}
    sidecar.write_text(json.dumps(meta, indent=1))
    progress(100, "backup done")
    return _info(vm_uuid, backup_name, meta, archive)


def _import(client: Client, archive: Path, name: str) -> None:
    header = "X-Incus-name" if server_kind(client) == "incus" else "X-LXD-name"
    with open(archive, "rb") as fh:
        response = client.api.instances.post(data=fh, headers={"Content-Type": "application/octet-stream",
                                                               header: name}, timeout=(5, 600))
    run_async(client, response, timeout=3600)


def _carry_over(current: dict[str, Any]) -> Any:
    """What the restored instance takes from the VM as it is now (limits, forwards, disks)."""
    config = current.get("config") or {}
    devices = current.get("devices") or {}
    root_size = (devices.get("root") or {}).get("size")

    def change(body: dict[str, Any]) -> None:
        for key in CARRIED_CONFIG:
            if key in config:
                body["config"][key] = config[key]
            else:
                body["config"].pop(key, None)
        for dev in [d for d in body["devices"] if d.startswith((NAT_PREFIX, DISK_PREFIX))]:
            del body["devices"][dev]
        body["devices"].update({d: v for d, v in devices.items() if d.startswith((NAT_PREFIX, DISK_PREFIX))})
        if root_size and "root" in body["devices"]:
            body["devices"]["root"]["size"] = root_size

    return change


def backup_restore(client: Client, host: HostSpec, vm_uuid: str, backup_name: str,
                   sampler: lifecycle.CpuSampler, progress: Progress = _noop) -> VMInfo:
    archive, _ = _paths(host, vm_uuid, backup_name)
    if not archive.exists():
        raise errors.NotFound(f"backup {backup_name} of {vm_uuid} does not exist")
    try:
        current: dict[str, Any] | None = instances.get(client, vm_uuid)
    except errors.VMNotFound:
        current = None
    tmp = lifecycle.temp_name(vm_uuid, "rst")
    instances.delete(client, tmp)
    progress(10, "importing the backup")
    try:
        _import(client, archive, tmp)
        if current is not None:
            instances.modify(client, tmp, _carry_over(current))
    except (lxd_exc.LXDAPIException, OperationFailed, errors.IDCSError) as exc:
        instances.delete(client, tmp)
        text = exc.msg if isinstance(exc, errors.IDCSError) else instances.lxd_error(exc)
        raise errors.VMOperationFailed(f"restoring {vm_uuid} from {backup_name} failed, the VM is "
                                       f"unchanged: {text}") from exc
    was_running = current is not None and current.get("status") in ("Running", "Frozen")
    progress(60, "replacing the VM with the backup")
    if current is not None:
        instances.delete(client, vm_uuid)
    instances.rename(client, tmp, vm_uuid)
    if was_running:
        progress(80, "starting the VM")
        instances.set_state(client, vm_uuid, "start")
    progress(100, "restored")
    return lifecycle.info_of(client, host, sampler, vm_uuid, probe=False)


def backup_delete(host: HostSpec, vm_uuid: str, backup_name: str) -> None:
    archive, sidecar = _paths(host, vm_uuid, backup_name)
    archive.unlink(missing_ok=True)
    sidecar.unlink(missing_ok=True)
    try:
        archive.parent.rmdir()  # only when empty
    except OSError:
        pass


def backup_list(host: HostSpec) -> list[BackupInfo]:
    root = backup_dir(host)
    found: list[BackupInfo] = []
    if not root.is_dir():
        return found
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for archive in sorted(folder.glob(f"*{SUFFIX}")):
            name = archive.name.removesuffix(SUFFIX)
            sidecar = folder / f"{name}.json"
            try:
                meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
            except ValueError:
                meta = {}
            if not meta.get("created_at"):
                meta["created_at"] = datetime.datetime.fromtimestamp(
                    archive.stat().st_mtime, datetime.UTC).isoformat(timespec="seconds")
            found.append(_info(folder.name, name, meta, archive))
    return found
