"""The billing dialect's names for the contract's answer fields, in one place.

The billing modules read some fields under their own names; answers carry both, the alias right
after the contract's field. (A request may use either name: the bodies in ``api/schemas.py``
accept them. Per-profile reshaping, units and extra fields are ``api/dialects.py``'s.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# contract field -> the dialect's name for it
BACKUP: Mapping[str, str] = {"backup_name": "vm_back", "description": "vm_tips"}


def aliased(fields: dict[str, Any], aliases: Mapping[str, str]) -> dict[str, Any]:
    """``fields`` with each alias of ``aliases`` placed right after the field it names."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        out[key] = value
        if key in aliases:
            out[aliases[key]] = value
    return out
