"""OS images: template VMs (kind ``template``, cloned on create) and ISO files on the
datastores (kind ``iso``), grouped by OS family; resolving what a client passes back."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from idcs_core import errors
from idcs_core.types import ImageKind, OSImage
from idcs_esxi import naming, tasks
from idcs_esxi.client import Connection
from idcs_esxi.props import read_view

_FAMILIES = [
    ("windows", re.compile(r"win|windows", re.I)),
    ("ubuntu", re.compile(r"ubuntu", re.I)),
    ("debian", re.compile(r"debian", re.I)),
    ("centos", re.compile(r"centos|rhel|red.?hat|rocky|alma", re.I)),
    ("fedora", re.compile(r"fedora", re.I)),
    ("suse", re.compile(r"suse|sles", re.I)),
    ("freebsd", re.compile(r"freebsd", re.I)),
]
_GUEST_IDS = {"windows": "windows9Server64Guest", "ubuntu": "ubuntu64Guest", "debian": "debian11_64Guest",
              "centos": "centos8_64Guest", "fedora": "fedora64Guest", "suse": "sles15_64Guest",
              "freebsd": "freebsd12_64Guest"}
_DS_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*(?P<path>.*)$")
_ALIAS = re.compile(r"^(?P<ds>[A-Za-z0-9_.@+-]+):(?P<path>[^:].*)$")


def family_of(name: str) -> str:
    """The OS family a name suggests (``other`` when none)."""
    for family, pattern in _FAMILIES:
        if pattern.search(name):
            return family
    return "other"


def guest_id_for(name: str) -> str:
    """A vSphere guest OS id for a new VM made from ``name``."""
    return _GUEST_IDS.get(family_of(name), "otherLinux64Guest")


def datastore_path(value: str) -> tuple[str, str] | None:
    """``(datastore, path)`` of ``[ds] path`` or of the alias ``ds:path``; None for other names."""
    for pattern in (_DS_PATH, _ALIAS):
        match = pattern.match(value.strip())
        if match and match.group("path").strip():
            path = match.group("path").strip().lstrip("/")
            if ".." in path.split("/") or any(ord(c) < 32 for c in path):
                raise errors.BadRequest(f"{value!r} is not a safe datastore path")
            return match.group("ds"), path
    return None


def iso_files(conn: Connection) -> list[str]:
    """Every ``*.iso`` on the datacenter's datastores, as ``[datastore] folder/file.iso``."""
    rows = read_view(conn, conn.ds_view, vim.Datastore, ["name", "browser", "summary.accessible"])
    found: list[str] = []
    spec = vim.host.DatastoreBrowser.SearchSpec(matchPattern=["*.iso", "*.ISO"])
    for row in rows:
        if not row.get("summary.accessible", True) or row.get("browser") is None:
            continue
        name = row.get("name")
        task = row.get("browser").SearchDatastoreSubFolders_Task(datastorePath=f"[{name}]", searchSpec=spec)
        for result in tasks.wait(conn, task, f"listing ISO files on {name}", timeout=60) or []:
            folder = result.folderPath or f"[{name}]"
            for file in result.file or []:
                found.append(join_path(folder, file.path))
    return sorted(set(found))


def join_path(folder: str, file: str) -> str:
    """``[ds] a/b`` + ``c.iso`` -> ``[ds] a/b/c.iso`` (vcsim writes ``[ds]/a``, ESXi ``[ds] a``)."""
    match = _DS_PATH.match(folder)
    if not match:
        return f"{folder}/{file}"
    rel = match.group("path").strip().strip("/")
    return f"[{match.group('ds')}] {rel + '/' if rel else ''}{file}"


def os_images(conn: Connection) -> list[OSImage]:
    """Templates and ISO files of the host."""
    idx = naming.index(conn, refresh=True)
    images = [OSImage(name=name, file=name, family=family_of(name), kind=ImageKind.TEMPLATE)
              for name in sorted(idx.templates)]
    for path in iso_files(conn):
        label = path.rsplit("/", 1)[-1].split("] ", 1)[-1]
        images.append(OSImage(name=label, file=path, family=family_of(label), kind=ImageKind.ISO))
    return images


@dataclass(frozen=True)
class Source:
    """What a VM is created from: a template VM or an ISO file."""

    kind: ImageKind
    template: Any = None
    iso_path: str = ""


def resolve_iso(conn: Connection, name: str) -> str:
    """The canonical ``[ds] path`` of an ISO the host has; ``BadRequest`` otherwise."""
    parsed = datastore_path(name)
    if parsed is None:
        raise errors.BadRequest(f"{name!r} is not a datastore path such as '[datastore1] iso/debian.iso'")
    wanted = f"[{parsed[0]}] {parsed[1]}"
    if wanted not in iso_files(conn):
        raise errors.BadRequest(f"the host has no ISO file {wanted!r}")
    return wanted


def resolve_source(conn: Connection, os_name: str) -> Source:
    """A template of that name, or an ISO file on a datastore."""
    idx = naming.index(conn)
    if os_name not in idx.templates:
        idx = naming.index(conn, refresh=True)
    if os_name in idx.templates:
        return Source(ImageKind.TEMPLATE, template=idx.by_name[os_name])
    if datastore_path(os_name) is not None:
        return Source(ImageKind.ISO, iso_path=resolve_iso(conn, os_name))
    raise errors.BadRequest(f"the host has no template or ISO named {os_name!r}")
