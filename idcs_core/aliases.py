"""The billing dialect's names for the contract's answer fields, in one place.

The billing modules read some fields under their own names; answers carry both, the alias right
after the contract's field. The API's presenters and the task handlers whose result is the answer
(a NAT rule, an address, a proxy route) use these tables, so an alias is declared once. (A request
may use either name: the bodies in ``api/schemas.py`` accept them. Per-profile reshaping, units
and extra fields are ``api/dialects.py``'s.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# contract field -> the dialect's name for it
BACKUP: Mapping[str, str] = {"backup_name": "vm_back", "description": "vm_tips"}
NAT: Mapping[str, str] = {"host_port": "wan_port", "vm_port": "lan_port", "tips": "nat_tips"}
PROXY: Mapping[str, str] = {"domain": "web_addr", "tips": "web_tips"}
IP: Mapping[str, str] = {"address": "ip4_addr", "tips": "nic_tips"}
VM: Mapping[str, str] = {"ram_num": "mem_num"}


def aliased(fields: dict[str, Any], aliases: Mapping[str, str]) -> dict[str, Any]:
    """``fields`` with each alias of ``aliases`` placed right after the field it names."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        out[key] = value
        if key in aliases:
            out[aliases[key]] = value
    return out
