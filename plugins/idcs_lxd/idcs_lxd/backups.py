"""Backups as LXD snapshots, with optional exported archives.

**A backup is a snapshot** of the instance named ``backup_name``. Snapshots live
on the host with the instance (nothing is kept on the OpenIDCS machine, so a
fresh host record's scan finds them), are cheap on copy-on-write pools and
restore in place (same instance, same volatile identity, attached disks stay
attached). Their description and creation time are kept in the instance's
config key ``user.idcs.backup.<name>``.

**Restore** stops the instance, restores the snapshot (LXD then also restores the
config of that moment), puts back what the core records separately — the
current limits, NAT forwards, extra disks and ``user.idcs.*`` keys — and starts
it again if it was running. The data is the snapshot's.

**Reinstalls and archive restores keep backups**: they replace the VM's instance
by a new one, and snapshots cannot move between instances, so the old instance
is kept, hidden, as a *holder* of its snapshots (``replace``). A backup held
there is restored by copying the snapshot into a new instance and swapping it
in; the VM as it is then is retired the same way, so its own backups stay too.

**Archives (optional)**: with the host option ``backup_dir`` set, each backup is
also exported to ``<backup_dir>/<vm_uuid>/<backup_name>.tar.gz`` + ``.json`` on the
OpenIDCS machine: the snapshot is copied into a helper instance (its extra disks
switched off), which is exported (``POST /instances/<n>/backups``, instance only,
gzip) and deleted, so the archive holds the snapshot's state, not the live one.
An archive survives the instance and its pool: when the snapshot is gone (the
VM was deleted), restore imports the archive under a temporary name and puts it
in place of the VM. Snapshots (and holders) die with the VM; the core deletes a
deleted VM's backups anyway.

Restore looks in this order: a snapshot of the VM's instance (in place), a
snapshot in one of its holders, the archive.
"""

from __future__ import annotations

import datetime
import json
import os
import uuid
from pathlib import Path
from typing import Any

from pylxd import Client
from pylxd import exceptions as lxd_exc

from idcs_core import errors
from idcs_core.types import BackupInfo, HostSpec, Progress, VMInfo
from idcs_lxd import instances, lifecycle, replace
from idcs_lxd.client import run_async
from idcs_lxd.errors import OperationFailed
from idcs_lxd.host import server_kind
from idcs_lxd.naming import (
    KEY_BACKUP,
    check_vm_uuid,
    instance_name,
    is_holder,
    is_internal,
    temp_name,
    vm_uuid_of,
)
from idcs_lxd.storage import check_disk_name

SUFFIX = ".tar.gz"
CARRIED_CONFIG = ("limits.cpu", "limits.memory")


def _noop(percent: int, message: str = "") -> None:
    return None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _check(backup_name: str) -> str:
    try:
        return check_disk_name(backup_name)  # same rule: 1-64 of [A-Za-z0-9_.-], no ".."
    except errors.BadRequest:
        raise errors.BadRequest(f"invalid backup name {backup_name!r}: 1-64 letters, digits, "
                                "'.', '_' or '-'") from None


def archive_dir(host: HostSpec) -> Path | None:
    """The host option ``backup_dir`` (archives are made only when it is set)."""
    configured = host.options.get("backup_dir")
    return Path(configured).expanduser() if configured else None


def _archive(host: HostSpec, vm_uuid: str, backup_name: str) -> tuple[Path, Path] | None:
    folder = archive_dir(host)
    if folder is None:
        return None
    folder = folder / check_vm_uuid(vm_uuid)
    return folder / f"{backup_name}{SUFFIX}", folder / f"{backup_name}.json"


def _snapshots(client: Client, name: str) -> dict[str, dict[str, Any]]:
    response = client.api.instances[name].snapshots.get(params={"recursion": "1"})
    return {s["name"].rsplit("/", 1)[-1]: s for s in response.json()["metadata"]}


def _meta(inst: dict[str, Any], backup_name: str) -> dict[str, Any]:
    try:
        return dict(json.loads((inst.get("config") or {}).get(KEY_BACKUP + backup_name, "{}")))
    except ValueError:
        return {}


# ------------------------------------------------------------------ create


def _export(client: Client, name: str, archive: Path, progress: Progress) -> None:
    """Make an instance backup of ``name`` on the server, stream it into ``archive``, delete it there."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    remote = f"idcs-{uuid.uuid4().hex[:12]}"
    expires = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)).isoformat()
    node = client.api.instances[name].backups
    run_async(client, node.post(json={"name": remote, "instance_only": True, "optimized_storage": False,
                                      "compression_algorithm": "gzip", "expires_at": expires}), timeout=3600)
    partial = archive.parent / f".{archive.name}.part"
    try:
        progress(70, "downloading the archive")
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


def _export_snapshot(client: Client, name: str, backup_name: str, archive: Path, progress: Progress) -> None:
    """Export the state of snapshot ``backup_name`` (not the live instance) into ``archive``.

    LXD exports instances, not snapshots: the snapshot is copied into a helper
    instance, with its extra disks and ISO switched off (the archive must import
    even when the VM's volumes are gone), which is exported and deleted.
    """
    helper = temp_name(name, "exp")
    instances.delete(client, helper)
    try:
        replace.copy_snapshot(client, name, backup_name, helper, prefixes=replace.STORAGE)
        _export(client, helper, archive, progress)
    finally:
        instances.delete(client, helper)


def _holders_with(client: Client, name: str, backup_name: str) -> list[str]:
    return [h for h in replace.holders(client, name) if backup_name in replace.snapshot_names(client, h)]


def backup_create(client: Client, host: HostSpec, vm_uuid: str, backup_name: str, description: str,
                  progress: Progress = _noop) -> BackupInfo:
    _check(backup_name)
    name = instance_name(vm_uuid)
    inst = instances.get(client, name)
    if backup_name in _snapshots(client, name) or _holders_with(client, name, backup_name):
        raise errors.Conflict(f"backup {backup_name} of {vm_uuid} already exists")
    progress(10, "taking a snapshot")
    run_async(client, client.api.instances[name].snapshots.post(json={"name": backup_name, "stateful": False}),
              timeout=3600)
    meta = {"description": description or "", "created_at": _now()}
    instances.patch(client, name, {"config": {KEY_BACKUP + backup_name: json.dumps(meta)}})
    size = None
    paths = _archive(host, vm_uuid, backup_name)
    if paths is not None:
        progress(40, "exporting the archive")
        archive, sidecar = paths
        _export_snapshot(client, name, backup_name, archive, progress)
        size = archive.stat().st_size
        sidecar.write_text(json.dumps({**meta, "backup_name": backup_name, "vm_uuid": vm_uuid,
                                       "size_bytes": size, "server": server_kind(client),
                                       "instance_type": inst.get("type"), "format": "lxd-instance-backup"},
                                      indent=1))
    progress(95, "backup done")
    return BackupInfo(backup_name=backup_name, vm_uuid=vm_uuid, description=meta["description"],
                      size_bytes=size, created_at=meta["created_at"])


# ------------------------------------------------------------------ restore


def _carry_over(current: dict[str, Any], *, keep_backups: bool = True) -> Any:
    """What the restored instance takes from the VM as it is now.

    ``keep_backups``: the restored instance is the VM's instance itself (an in-place
    snapshot restore), so the records of its snapshots stay; a new instance has
    none of the snapshots, so it takes none of the records.
    """
    config = current.get("config") or {}
    devices = current.get("devices") or {}
    root_size = (devices.get("root") or {}).get("size")

    def carried(key: str) -> bool:
        if key.startswith(KEY_BACKUP):
            return keep_backups
        return key in CARRIED_CONFIG or key.startswith("user.idcs.")

    def change(body: dict[str, Any]) -> None:
        for key in [k for k in body["config"] if k in CARRIED_CONFIG or k.startswith("user.idcs.")]:
            del body["config"][key]
        body["config"].update({k: v for k, v in config.items() if carried(k)})
        for dev in [d for d in body["devices"] if d.startswith(replace.MANAGED)]:
            del body["devices"][dev]
        body["devices"].update({d: v for d, v in devices.items() if d.startswith(replace.MANAGED)})
        if root_size and "root" in body["devices"]:
            body["devices"]["root"]["size"] = root_size

    return change


def _restore_snapshot(client: Client, name: str, current: dict[str, Any], backup_name: str,
                      progress: Progress) -> None:
    was_running = current.get("status") in ("Running", "Frozen")
    progress(20, "stopping the VM")
    instances.stop(client, name, force=True)
    progress(40, f"restoring snapshot {backup_name}")
    run_async(client, client.api.instances[name].put(json={"restore": backup_name}), timeout=3600)
    instances.modify(client, name, _carry_over(current))
    if was_running:
        progress(80, "starting the VM")
        instances.set_state(client, name, "start")


def _import(client: Client, archive: Path, name: str) -> None:
    header = "X-Incus-name" if server_kind(client) == "incus" else "X-LXD-name"
    with open(archive, "rb") as fh:
        response = client.api.instances.post(data=fh, headers={"Content-Type": "application/octet-stream",
                                                               header: name}, timeout=(5, 600))
    run_async(client, response, timeout=3600)


def _restore_new(client: Client, name: str, vm_uuid: str, current: dict[str, Any] | None,
                 make: Any, what: str, progress: Progress) -> None:
    """Build the restored system as a helper instance with ``make(helper)``, then put it in
    place of the VM (``replace.swap_in``: on failure the VM stays as it is)."""
    tmp = temp_name(name, "rst")
    instances.delete(client, tmp)
    progress(20, what)
    was_running = current is not None and current.get("status") in ("Running", "Frozen")
    try:
        make(tmp)
        if current is not None:
            instances.modify(client, tmp, _carry_over(current, keep_backups=False))
        progress(60, "putting the restored system in place of the VM")
        if current is not None:
            replace.swap_in(client, name, tmp, vm_uuid, was_running=was_running)
        else:
            instances.rename(client, tmp, name)
    except BaseException:
        instances.delete(client, tmp)
        raise
    if was_running:
        progress(80, "starting the VM")
        instances.set_state(client, name, "start")


def backup_restore(client: Client, host: HostSpec, vm_uuid: str, backup_name: str,
                   sampler: lifecycle.CpuSampler, progress: Progress = _noop) -> VMInfo:
    _check(backup_name)
    name = instance_name(vm_uuid)
    try:
        current: dict[str, Any] | None = instances.get(client, name)
    except errors.VMNotFound:
        current = None
    paths = _archive(host, vm_uuid, backup_name)
    try:
        holder = next(iter(_holders_with(client, name, backup_name)), None)
        if current is not None and backup_name in _snapshots(client, name):
            _restore_snapshot(client, name, current, backup_name, progress)
        elif holder is not None:
            _restore_new(client, name, vm_uuid, current,
                         lambda tmp: replace.copy_snapshot(client, holder, backup_name, tmp),
                         f"copying snapshot {backup_name} kept from before a reinstall", progress)
        elif paths is not None and paths[0].exists():
            _restore_new(client, name, vm_uuid, current, lambda tmp: _import(client, paths[0], tmp),
                         "importing the archive", progress)
        elif current is None:
            raise errors.VMNotFound(f"{vm_uuid} does not exist and backup {backup_name} has no archive")
        else:
            raise errors.NotFound(f"backup {backup_name} of {vm_uuid} does not exist")
    except (lxd_exc.LXDAPIException, OperationFailed) as exc:
        raise errors.VMOperationFailed(f"restoring {vm_uuid} from {backup_name} failed: "
                                       f"{instances.lxd_error(exc)}") from exc
    progress(95, "restored")
    return lifecycle.info_of(client, host, sampler, vm_uuid, probe=False)


# ------------------------------------------------------------------ delete and list


def _forget(client: Client, name: str, backup_name: str) -> None:
    def forget(body: dict[str, Any]) -> None:
        body["config"].pop(KEY_BACKUP + backup_name, None)

    try:
        instances.modify(client, name, forget)
    except errors.VMNotFound:
        pass


def backup_delete(client: Client, host: HostSpec, vm_uuid: str, backup_name: str) -> None:
    _check(backup_name)
    name = instance_name(vm_uuid)
    try:
        run_async(client, client.api.instances[name].snapshots[backup_name].delete(), timeout=600)
    except lxd_exc.NotFound:
        pass
    _forget(client, name, backup_name)
    for holder in _holders_with(client, name, backup_name):
        run_async(client, client.api.instances[holder].snapshots[backup_name].delete(), timeout=600)
        if replace.snapshot_names(client, holder):
            _forget(client, holder, backup_name)
        else:
            instances.delete(client, holder)  # its last backup: nothing left to hold
    paths = _archive(host, vm_uuid, backup_name)
    if paths is not None:
        for path in paths:
            path.unlink(missing_ok=True)
        try:
            paths[0].parent.rmdir()  # only when empty
        except OSError:
            pass


def backup_list(client: Client, host: HostSpec) -> list[BackupInfo]:
    """Every snapshot of every VM and holder (one API call), plus archives without a snapshot."""
    found: dict[tuple[str, str], BackupInfo] = {}
    for inst in instances.list_all(client, recursion=2):
        if is_internal(inst["name"]) and not is_holder(inst["name"]):
            continue  # a helper of a reinstall, restore or export in progress: its copies are not backups
        vm_uuid = vm_uuid_of(inst)
        for snap in inst.get("snapshots") or []:
            snap_name = snap["name"].rsplit("/", 1)[-1]
            meta = _meta(inst, snap_name)
            size = snap.get("size")
            found[(vm_uuid, snap_name)] = BackupInfo(
                backup_name=snap_name, vm_uuid=vm_uuid, description=str(meta.get("description", "")),
                size_bytes=size if isinstance(size, int) and size >= 0 else None,
                created_at=meta.get("created_at") or snap.get("created_at"))
    root = archive_dir(host)
    if root is not None and root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            for archive in sorted(folder.glob(f"*{SUFFIX}")):
                key = (folder.name, archive.name.removesuffix(SUFFIX))
                if key in found:
                    found[key].size_bytes = found[key].size_bytes or archive.stat().st_size
                    continue
                sidecar = folder / f"{key[1]}.json"
                try:
                    meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
                except ValueError:
                    meta = {}
                found[key] = BackupInfo(backup_name=key[1], vm_uuid=key[0],
                                        description=str(meta.get("description", "")),
                                        size_bytes=archive.stat().st_size, created_at=meta.get("created_at"))
    return list(found.values())
