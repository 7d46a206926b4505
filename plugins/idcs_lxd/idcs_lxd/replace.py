"""Putting a new instance in the place of a VM's, and keeping the backups of the one replaced.

A reinstall or an archive restore builds the new system as a helper instance
(``idcs-new-*`` / ``idcs-rst-*``) and then swaps it in:

1. the VM's instance is stopped and renamed aside (``idcs-old-<hash>-<random>``);
2. the new instance is renamed to the VM's name;
3. the old one is deleted, or kept when it holds snapshots (backups).

If step 2 fails, the old instance gets its name back (and is started again if it
was running): there is no moment in which a failure loses the VM. LXD only
renames stopped instances, so the VM is down for the two renames.

**Holders.** A snapshot cannot move from one instance to another, and deleting an
instance deletes its snapshots, which are this engine's backups. So an old
instance with snapshots is not deleted but *retired*: it keeps its name
``idcs-old-…``, its snapshots and their ``user.idcs.backup.*`` records, loses its
NAT forwards and extra disks (they belong to the VM) and never starts. It is
not a VM (``vm_list`` hides it); ``backups`` lists and restores the snapshots it
holds, ``backup_delete`` deletes it with its last snapshot, ``vm_delete`` with
the VM.
"""

from __future__ import annotations

import logging
from typing import Any

from pylxd import Client
from pylxd import exceptions as lxd_exc

from idcs_core import errors
from idcs_lxd import instances
from idcs_lxd.errors import OperationFailed
from idcs_lxd.naming import KEY_VM_UUID, holder_name, holder_prefix, is_internal, temp_name
from idcs_lxd.network import NAT_PREFIX
from idcs_lxd.storage import DISK_PREFIX, ISO_DEVICE

log = logging.getLogger("idcs.lxd")

# Devices that belong to the VM rather than to one of its systems: forwards, disks, the ISO.
MANAGED = (NAT_PREFIX, DISK_PREFIX, ISO_DEVICE)
STORAGE = (DISK_PREFIX, ISO_DEVICE)


def names(client: Client) -> list[str]:
    """Every instance name (one cheap call)."""
    return [url.rstrip("/").rsplit("/", 1)[-1] for url in client.api.instances.get().json()["metadata"]]


def holders(client: Client, name: str, all_names: list[str] | None = None) -> list[str]:
    """The retired predecessors of instance ``name`` (oldest name first is not implied)."""
    prefix = holder_prefix(name)
    return sorted(n for n in (all_names if all_names is not None else names(client)) if n.startswith(prefix))


def snapshot_names(client: Client, name: str) -> list[str]:
    return [url.rstrip("/").rsplit("/", 1)[-1]
            for url in client.api.instances[name].snapshots.get().json()["metadata"]]


def blank_devices(devices: dict[str, Any], prefixes: tuple[str, ...] = MANAGED) -> dict[str, dict[str, str]]:
    """Overrides that switch off the named devices in a copy (``type: none``): the copy of a
    snapshot then neither needs the VM's volumes nor claims its ports."""
    return {dev: {"type": "none"} for dev in devices if dev.startswith(prefixes)}


def copy_snapshot(client: Client, source: str, snapshot: str, target: str,
                  prefixes: tuple[str, ...] = MANAGED) -> None:
    """Make the stopped instance ``target`` from ``source``'s snapshot, the ``prefixes`` devices off."""
    snap = client.api.instances[source].snapshots[snapshot].get().json()["metadata"]
    body = {"name": target, "source": {"type": "copy", "source": f"{source}/{snapshot}", "instance_only": True},
            "devices": blank_devices(snap.get("devices") or {}, prefixes)}
    instances.create(client, body, timeout=3600)


def retire(client: Client, old: str, vm_uuid: str) -> bool:
    """Delete the replaced instance ``old``, or keep it as a holder if it has snapshots.

    Returns True if it was kept. A failed delete is logged, not raised: the new
    system is in place, and the leftover is hidden and removed with the VM.
    """
    try:
        if snapshot_names(client, old):
            def strip(body: dict[str, Any]) -> None:
                for dev in [d for d in body["devices"] if d.startswith(MANAGED)]:
                    del body["devices"][dev]
                body["config"][KEY_VM_UUID] = vm_uuid
                body["config"]["boot.autostart"] = "false"

            instances.modify(client, old, strip)
            return True
        instances.delete(client, old)
    except (lxd_exc.LXDAPIException, OperationFailed, errors.IDCSError) as exc:
        log.warning("replaced instance %s of %s could not be tidied up: %s", old, vm_uuid, instances.lxd_error(exc))
    return False


def swap_in(client: Client, name: str, new: str, vm_uuid: str, *, was_running: bool) -> bool:
    """Put the stopped instance ``new`` in the place of instance ``name``; retire the old one.

    Returns True if the old one was kept as a holder of its snapshots. On failure
    the old instance is back under its name (running again if ``was_running``),
    ``new`` is left for the caller to delete, and the error is raised.
    """
    instances.stop(client, name, force=True)
    aside = holder_name(name)
    instances.rename(client, name, aside)
    try:
        instances.rename(client, new, name)
    except BaseException as exc:
        try:
            instances.rename(client, aside, name)
            if was_running:
                instances.set_state(client, name, "start")
        except (lxd_exc.LXDAPIException, OperationFailed) as undo:
            raise errors.VMOperationFailed(
                f"replacing {name} failed ({instances.lxd_error(exc) if isinstance(exc, Exception) else exc}) "
                f"and so did putting it back ({instances.lxd_error(undo)}): the VM's system is the "
                f"instance {aside} on the host, rename it to {name}") from exc
        raise
    return retire(client, aside, vm_uuid)


def remove_helpers(client: Client, name: str) -> None:
    """Delete everything of instance ``name``'s that is not the VM: holders and helper leftovers."""
    all_names = names(client)
    leftovers = holders(client, name, all_names)
    leftovers += [temp_name(name, p) for p in ("new", "rst", "exp") if temp_name(name, p) in all_names]
    for helper in leftovers:
        if is_internal(helper):
            instances.delete(client, helper)
