"""vm_uuid <-> vSphere VM, through a cached index.

A VM's ``vm_uuid`` is its name on the host; its ``ref`` is its instance UUID
(``config.instanceUuid``). Both map to the managed object through an index kept per
session, rebuilt in one property read when a lookup misses (never one search per call).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pyVmomi import vim

from idcs_core import errors
from idcs_esxi.client import Connection
from idcs_esxi.props import read_view

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
INDEX_PATHS = ["name", "config.instanceUuid", "config.template"]


@dataclass
class VMIndex:
    """Names and instance UUIDs of the host's VMs (templates included) -> managed objects."""

    by_uuid: dict[str, Any] = field(default_factory=dict)
    by_name: dict[str, Any] = field(default_factory=dict)
    templates: set[str] = field(default_factory=set)

    def add(self, name: str, uuid: str | None, obj: Any, template: bool = False) -> None:
        self.by_name[name] = obj
        if uuid:
            self.by_uuid[uuid.lower()] = obj
        if template:
            self.templates.add(name)

    def forget(self, name: str, uuid: str | None = None) -> None:
        obj = self.by_name.pop(name, None)
        self.templates.discard(name)
        for key, value in list(self.by_uuid.items()):
            if (uuid and key == uuid.lower()) or (obj is not None and value == obj):
                del self.by_uuid[key]


def looks_like_ref(ref: str | None) -> bool:
    """True for an instance UUID (what this engine returns as ``VMInfo.ref``)."""
    return bool(ref) and bool(_UUID.match(str(ref)))


def index(conn: Connection, refresh: bool = False) -> VMIndex:
    """The session's VM index, built (or rebuilt) in one property read."""
    with conn.lock:
        current = conn.index.get("vms")
    if current is not None and not refresh:
        return current
    fresh = VMIndex()
    for row in read_view(conn, conn.vm_view, vim.VirtualMachine, INDEX_PATHS):
        name = row.get("name")
        if name:
            fresh.add(name, row.get("config.instanceUuid"), row.obj, bool(row.get("config.template")))
    with conn.lock:
        conn.index["vms"] = fresh
    return fresh


def _lookup(idx: VMIndex, vm_uuid: str, ref: str | None) -> vim.VirtualMachine | None:
    if looks_like_ref(ref):
        obj = idx.by_uuid.get(str(ref).lower())
        if obj is not None:
            return obj
    if vm_uuid in idx.templates:
        return None  # a template is an image, never a VM of the API
    return idx.by_name.get(vm_uuid)


def find_vm(conn: Connection, vm_uuid: str, ref: str | None = None) -> vim.VirtualMachine | None:
    """The VM's managed object, or None when the host has no such VM."""
    obj = _lookup(index(conn), vm_uuid, ref)
    if obj is None:
        obj = _lookup(index(conn, refresh=True), vm_uuid, ref)
    return obj


def resolve(conn: Connection, vm_uuid: str, ref: str | None = None) -> vim.VirtualMachine:
    """The VM's managed object; ``VMNotFound`` when the host has none of that name or ref."""
    obj = find_vm(conn, vm_uuid, ref)
    if obj is None:
        raise errors.VMNotFound(f"no VM {vm_uuid!r} on host {conn.host.name}")
    return obj


def forget(conn: Connection, vm_uuid: str) -> None:
    """Drop a deleted VM from the index."""
    index(conn).forget(vm_uuid)


def remember(conn: Connection, vm_uuid: str, uuid: str | None, obj: vim.VirtualMachine) -> None:
    """Add a created VM to the index."""
    index(conn).add(vm_uuid, uuid, obj)
