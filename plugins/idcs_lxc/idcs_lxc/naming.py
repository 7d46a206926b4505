"""vm_uuid <-> LXC container names, and the names the engine gives to what it makes.

A container is named after its ``vm_uuid`` (the core allows letters, digits, ``-``, ``_``
and ``.``), so the back end's ref is the name itself.
"""

from __future__ import annotations

import hashlib
import re

from idcs_core import errors

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def container_name(vm_uuid: str, ref: str | None = None) -> str:
    """The container of a VM: ``ref`` when it is a valid LXC name, else ``vm_uuid``."""
    for candidate in (ref, vm_uuid):
        if candidate and NAME.match(candidate) and ".." not in candidate:
            return candidate
    raise errors.BadRequest(f"not a valid container name: {vm_uuid!r}")


def check_item(kind: str, value: str) -> str:
    """A disk or backup name: the same safe characters as a container name."""
    if not NAME.match(value or "") or ".." in value:
        raise errors.BadRequest(f"not a valid {kind} name: {value!r}")
    return value


def hwaddr(name: str) -> str:
    """A stable MAC for a container (00:16:3e is LXC's prefix), so DHCP keeps its address."""
    digest = hashlib.sha256(name.encode()).digest()
    return "00:16:3e:" + ":".join(f"{b:02x}" for b in (digest[0] & 0x7F, digest[1], digest[2]))


def rule_comment(vm: str, protocol: str, host_port: int, vm_port: int) -> str:
    """The name of one NAT rule in the engine's nftables table."""
    return f"idcs:{vm}:{protocol}:{host_port}:{vm_port}"
