"""Images: resolving ``os_name`` to an image, and listing what VMs can be created from.

``os_name`` is an image alias (``debian/12``, ``idcs-busybox``) or a fingerprint
(full, or a unique prefix of at least 8 characters), as shown in ``OSImage.file``.
ISO files for VMs are listed too (family from their name): custom volumes of content type
``iso`` (Incus) and ``*.iso`` files in the host option ``iso_dir`` (local hosts).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pylxd import Client
from pylxd import exceptions as lxd_exc

from idcs_core import errors
from idcs_core.types import HostSpec, OSImage

_FINGERPRINT = re.compile(r"^[0-9a-f]{8,64}$")

# os property (lower-cased, spaces removed) -> family shown by the API.
_FAMILY_ALIASES = {
    "rockylinux": "rocky", "almalinux": "almalinux", "centos-stream": "centos", "opensuse": "opensuse",
    "archlinux": "arch", "oracle": "oracle", "windows": "windows", "mswindows": "windows",
}


@dataclass
class ResolvedImage:
    fingerprint: str
    alias: str | None
    type: str  # container | virtual-machine
    properties: dict[str, Any]

    @property
    def description(self) -> str:
        props = self.properties
        return str(props.get("description") or " ".join(
            str(props[k]) for k in ("os", "release") if props.get(k)) or self.alias or self.fingerprint[:12])


def family_of(properties: dict[str, Any], name: str = "") -> str:
    """Group an image by its ``os`` property (``Ubuntu`` -> ``ubuntu``), else by its name."""
    raw = str(properties.get("os") or "").strip().lower().replace(" ", "")
    if not raw:
        head = re.split(r"[/:_\- .]", name.strip().lower(), maxsplit=1)[0]
        raw = head if head.isalpha() else ""
    return _FAMILY_ALIASES.get(raw, raw) or "other"


def resolve(client: Client, os_name: str) -> ResolvedImage:
    """Find the local image ``os_name`` names; ``BadRequest`` if there is none."""
    name = (os_name or "").strip()
    if not name:
        raise errors.BadRequest("os_name is empty: give an image alias or fingerprint")
    try:
        target = client.api.images.aliases[name].get().json()["metadata"]["target"]
        alias: str | None = name
    except lxd_exc.NotFound:
        if not _FINGERPRINT.match(name.lower()):
            raise errors.BadRequest(f"unknown image {name!r}: no alias or fingerprint of that name on the "
                                    "host (see the host's OS image list)") from None
        target, alias = name.lower(), None
    except lxd_exc.LXDAPIException as exc:  # e.g. a name LXD finds malformed
        raise errors.BadRequest(f"unknown image {name!r}") from exc
    try:
        image = client.api.images[target].get().json()["metadata"]
    except lxd_exc.NotFound:
        raise errors.BadRequest(f"unknown image {name!r}") from None
    return ResolvedImage(image["fingerprint"], alias, image.get("type") or "container",
                         image.get("properties") or {})


def list_images(client: Client) -> list[OSImage]:
    """Every local image, one entry per alias (or per fingerprint when it has none)."""
    found: list[OSImage] = []
    for image in client.api.images.get(params={"recursion": "1"}).json()["metadata"]:
        props = image.get("properties") or {}
        base = str(props.get("description") or " ".join(
            str(props[k]) for k in ("os", "release") if props.get(k)) or image["fingerprint"][:12])
        if image.get("type") == "virtual-machine":
            base += " (VM)"
        aliases = [a["name"] for a in image.get("aliases") or []]
        for file in aliases or [image["fingerprint"][:12]]:
            found.append(OSImage(name=base if len(aliases) < 2 else f"{base} [{file}]", file=file,
                                 family=family_of(props, file)))
    return found


def iso_volumes(client: Client) -> list[tuple[str, str]]:
    """(pool, volume) of every custom volume with content type ``iso`` (Incus, LXD >= 5.13)."""
    if not client.has_api_extension("custom_volume_iso"):
        return []
    found = []
    for pool in client.api.storage_pools.get().json()["metadata"]:
        pool_name = pool.rstrip("/").rsplit("/", 1)[-1]
        vols = client.api.storage_pools[pool_name].volumes.get(params={"recursion": "1"}).json()["metadata"]
        found += [(pool_name, v["name"]) for v in vols
                  if v.get("type") == "custom" and v.get("content_type") == "iso"]
    return found


def iso_files(host: HostSpec, local: bool) -> list[Path]:
    """``*.iso`` files in the host option ``iso_dir`` (only readable when the daemon is local)."""
    directory = host.options.get("iso_dir")
    if not directory or not local or not os.path.isdir(directory):
        return []
    return sorted(p for p in Path(directory).iterdir() if p.suffix.lower() == ".iso" and p.is_file())


def list_isos(client: Client, host: HostSpec, local: bool) -> list[OSImage]:
    isos = [OSImage(name=f"{vol} (ISO volume in {pool})", file=vol, family=family_of({}, vol))
            for pool, vol in iso_volumes(client)]
    isos += [OSImage(name=p.name, file=p.name, family=family_of({}, p.name)) for p in iso_files(host, local)]
    return isos
