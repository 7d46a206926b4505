"""vm_uuid <-> vmrest ids: a VM's name in OpenIDCS is its .vmx file's name; vmrest addresses it by id."""

from __future__ import annotations

import re
from typing import Any

from idcs_core import errors

_VMREST_ID = re.compile(r"[A-Z0-9]{32}")


def vm_name(vmx_path: str) -> str:
    """The VM's name from its .vmx path (Windows or POSIX): ``C:\\VMs\\web1\\web1.vmx`` -> ``web1``."""
    base = re.split(r"[\\/]", vmx_path)[-1]
    return base[:-4] if base.lower().endswith(".vmx") else base


def is_template(name: str, prefix: str) -> bool:
    return bool(prefix) and name.startswith(prefix)


def looks_like_id(ref: str | None) -> bool:
    """Whether ``ref`` is a vmrest id (32 upper-case letters and digits) rather than a vm_uuid."""
    return bool(ref) and bool(_VMREST_ID.fullmatch(str(ref)))


def owner_tag(vm_uuid: str) -> str:
    """The ``desc`` of the port forwards OpenIDCS made for ``vm_uuid``: how they are owned per VM."""
    return f"idcs:{vm_uuid}"


class VmIndex:
    """One host's name -> id map, filled from one ``GET /api/vms`` and refreshed on a miss."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def update(self, listing: list[dict[str, Any]]) -> None:
        self.ids = {vm_name(v["path"]): v["id"] for v in listing}

    def lookup(self, vm_uuid: str) -> str | None:
        return self.ids.get(vm_uuid)

    def require(self, vm_uuid: str) -> str:
        found = self.ids.get(vm_uuid)
        if found is None:
            raise errors.VMNotFound(f"no VM named {vm_uuid} on the Workstation host")
        return found
