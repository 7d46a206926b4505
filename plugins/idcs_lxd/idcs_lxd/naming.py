"""From OpenIDCS's ``vm_uuid`` to an LXD instance name, and back.

The core allows ``vm_uuid`` of 1-64 letters, digits, ``_``, ``-`` and ``.``; LXD
instance names are host names (1-63 letters, digits and ``-``, not starting with a
digit or ``-``, not ending with ``-``). A ``vm_uuid`` that is a valid instance name
is used as it is. Any other is mapped, deterministically, to a valid name plus a
short hash (``my_vm.1`` -> ``my-vm-1-<8 hex>``), and the instance carries its
``vm_uuid`` in the config key ``user.idcs.vm_uuid``, so listing finds it again
without any record kept outside LXD.

The engine's own short-lived or retired instances have reserved names (see
``temp_name`` and ``holder_prefix``): they are never listed as VMs, and a
``vm_uuid`` that looks like one is mapped like any name LXD refuses.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

from idcs_core import errors

KEY_VM_UUID = "user.idcs.vm_uuid"
KEY_BACKUP = "user.idcs.backup."  # + backup name: its description and creation time (JSON)

_VM_UUID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_LXD_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# idcs-new-* (reinstall), idcs-rst-* (restore), idcs-exp-* (archive export), idcs-old-*-* (a
# replaced instance kept for the backups (snapshots) it holds, or on its way out).
_INTERNAL = re.compile(r"^idcs-(?:(?:new|rst|exp)-[0-9a-f]{16}|old-[0-9a-f]{16}-[0-9a-f]{8})$")
PURPOSES = ("new", "rst", "exp")


def is_instance_name(name: str) -> bool:
    return bool(_LXD_NAME.match(name or "")) and not is_internal(name)


def is_internal(name: str) -> bool:
    """True for the engine's own helper instances, which are not VMs."""
    return bool(_INTERNAL.match(name or ""))


def is_holder(name: str) -> bool:
    """True for a replaced instance kept for its snapshots (see ``replace``)."""
    return is_internal(name) and name.startswith("idcs-old-")


def check_vm_uuid(vm_uuid: str) -> str:
    if not _VM_UUID.match(vm_uuid or "") or ".." in vm_uuid:
        raise errors.BadRequest(f"invalid vm_uuid {vm_uuid!r}: 1-64 letters, digits, '_', '-' or '.'")
    return vm_uuid


def instance_name(vm_uuid: str) -> str:
    """The LXD instance name of ``vm_uuid`` (itself when LXD accepts it)."""
    check_vm_uuid(vm_uuid)
    if is_instance_name(vm_uuid):
        return vm_uuid
    base = re.sub(r"[^A-Za-z0-9]+", "-", vm_uuid).strip("-")
    if not base or not base[0].isalpha():
        base = f"vm-{base}".rstrip("-")
    digest = hashlib.sha1(vm_uuid.encode()).hexdigest()[:8]
    return f"{base[:63 - 9].rstrip('-')}-{digest}"


def vm_uuid_of(inst: dict[str, Any]) -> str:
    """The ``vm_uuid`` of an instance record: its ``user.idcs.vm_uuid``, else its name."""
    config = inst.get("config") or {}
    return str(config.get(KEY_VM_UUID) or inst["name"])


def _digest(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:16]


def temp_name(name: str, purpose: str) -> str:
    """A valid instance name derived from ``name`` for a short-lived helper instance."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown helper purpose {purpose!r}")
    return f"idcs-{purpose}-{_digest(name)}"


def holder_prefix(name: str) -> str:
    """Names of instance ``name``'s retired predecessors start with this."""
    return f"idcs-old-{_digest(name)}-"


def holder_name(name: str) -> str:
    """A fresh name for a retired predecessor of instance ``name``."""
    return f"{holder_prefix(name)}{secrets.token_hex(4)}"
