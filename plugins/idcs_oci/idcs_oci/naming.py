"""Names and labels: how OpenIDCS marks what it owns on a Docker host.

A VM is the container named ``vm_uuid``. Everything else the engine makes is
found again by name or label, never by a local record, so a scan of a host
gives the full picture after a restart of the control plane.
"""

from __future__ import annotations

import hashlib
import re

from idcs_core import errors

# Labels on VM containers.
MANAGED = "idcs.managed"
VM_UUID = "idcs.vm_uuid"
VM_NAME = "idcs.vm_name"
OS_NAME = "idcs.os_name"
HDD_NUM = "idcs.hdd_num"
HDD_ENFORCED = "idcs.hdd_enforced"

# Labels on backup images (see backups.py).
BACKUP = "idcs.backup"
BACKUP_VM = "idcs.backup.vm_uuid"
BACKUP_NAME = "idcs.backup.name"
BACKUP_DESCRIPTION = "idcs.backup.description"
BACKUP_CREATED = "idcs.backup.created_at"
BACKUP_HOST_CONFIG = "idcs.backup.host_config"
BACKUP_LABELS = (BACKUP, BACKUP_VM, BACKUP_NAME, BACKUP_DESCRIPTION, BACKUP_CREATED, BACKUP_HOST_CONFIG)

# Labels on extra-disk volumes (see storage.py).
DISK_NAME = "idcs.disk_name"
DISK_SIZE = "idcs.size_gb"

# Labels on NAT forwarder containers (see forwarders.py).
NAT_FORWARDER = "idcs.nat.forwarder"
NAT_VM = "idcs.nat.vm_uuid"
NAT_HOST_PORT = "idcs.nat.host_port"
NAT_VM_PORT = "idcs.nat.vm_port"
NAT_PROTOCOL = "idcs.nat.protocol"
NAT_TARGET = "idcs.nat.target"
NAT_BIND = "idcs.nat.bind"

STATE_REPO = "idcs-state"
BACKUP_REPO = "idcs-backup"
NAT_REPO = "idcs-nat"
OWN_REPOS = (STATE_REPO + "/", BACKUP_REPO + "/", NAT_REPO + "/")

_CONTAINER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_DISK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


def check_vm_uuid(vm_uuid: str) -> str:
    """A VM id must be a valid container name: it *is* the container's name."""
    if not _CONTAINER_NAME.match(vm_uuid or ""):
        raise errors.BadRequest(
            f"vm_uuid {vm_uuid!r} is not a valid container name (letters, digits, '_', '.', '-')")
    return vm_uuid


def check_disk_name(name: str) -> str:
    if not _DISK_NAME.match(name or ""):
        raise errors.BadRequest(
            f"disk name {name!r} is invalid: 1-63 letters, digits, '_', '.', '-', not starting with a sign")
    return name


def _safe(value: str, folded: str, max_len: int) -> str:
    """``folded`` if it equals ``value``, else ``folded`` plus a hash of ``value`` (kept unique)."""
    folded = folded.strip("-._") or "x"
    if folded == value and len(value) <= max_len:
        return value
    digest = hashlib.sha1(value.encode()).hexdigest()[:10]
    return f"{folded[: max_len - 11].rstrip('-._')}-{digest}"


def repo_component(value: str) -> str:
    """A repository path component: lowercase letters and digits joined by '.', '_' or dashes."""
    folded = re.sub(r"[^a-z0-9]+", lambda m: m.group(0) if m.group(0) in (".", "_", "__") or
                    set(m.group(0)) == {"-"} else "-", value.lower())
    return _safe(value, folded, 100)


def tag_component(value: str) -> str:
    """A tag: letters, digits, '_', '.', '-', up to 128 characters, not starting with '.' or '-'."""
    return _safe(value, re.sub(r"[^A-Za-z0-9_.-]+", "-", value), 128)


def state_ref(vm_uuid: str) -> str:
    """The image holding a VM's filesystem while its container is recreated."""
    return f"{STATE_REPO}/{repo_component(vm_uuid)}:current"


def short_tag(tag: str) -> str:
    """A tag without the registry Podman puts in front of local names (``localhost/``, or
    ``docker.io/`` for a short name it imported): ``localhost/idcs-state/x:current`` ->
    ``idcs-state/x:current``."""
    for prefix in ("localhost/", "docker.io/"):
        if tag.startswith(prefix):
            return tag[len(prefix):]
    return tag


def is_own_image(tag: str) -> bool:
    """A saved filesystem or a backup of the engine (not an OS image)."""
    return short_tag(tag).startswith(OWN_REPOS)


def backup_ref(vm_uuid: str, backup_name: str) -> str:
    return f"{BACKUP_REPO}/{repo_component(vm_uuid)}:{tag_component(backup_name)}"


def volume_name(vm_uuid: str, disk_name: str) -> str:
    return f"idcs-{vm_uuid}-{disk_name}"


def disk_mount_point(disk_name: str) -> str:
    return f"/mnt/{disk_name}"


def hostname_for(vm_uuid: str) -> str:
    """A DNS label derived from the VM id, so the guest's hostname is stable across recreations."""
    label = re.sub(r"[^a-z0-9-]+", "-", vm_uuid.lower()).strip("-")
    return label[:63].rstrip("-") or "vm"
