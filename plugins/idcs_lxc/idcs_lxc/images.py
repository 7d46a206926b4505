"""What containers are created from: an LXC template, ``download`` parameters, or a rootfs tarball.

``os_name`` forms:
- ``busybox`` (any template installed under ``/usr/share/lxc/templates`` as ``lxc-<name>``),
- ``download:<dist>:<release>:<arch>`` (the ``download`` template's parameters),
- ``<file>.tar[.gz|.xz|.zst]`` in the host's ``image_dir`` (a root file system; an optional
  ``<file>.conf`` beside it holds extra LXC config lines, such as ``lxc.signal.halt``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from idcs_core import errors
from idcs_core.types import ImageKind, OSImage
from idcs_lxc.client import Session

TEMPLATE_DIR = "/usr/share/lxc/templates"
TARBALL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*\.tar(\.gz|\.xz|\.zst|\.bz2)?$")
DOWNLOAD = re.compile(r"^download:([a-z0-9_.-]+):([a-z0-9_.-]+):([a-z0-9_.-]+)$")
FAMILIES = ("ubuntu", "debian", "centos", "alpine", "fedora", "rocky", "almalinux", "archlinux", "busybox")

LIST_SCRIPT = r"""
for t in "$1"/lxc-*; do [ -x "$t" ] && echo "T ${t##*/lxc-}"; done
[ -d "$2" ] && for f in "$2"/*; do [ -f "$f" ] && echo "F ${f##*/}"; done
exit 0
"""


@dataclass
class Source:
    """How to make a container's root file system."""

    kind: str  # template / download / tarball
    template: str = ""
    args: list[str] = field(default_factory=list)
    path: str = ""


def family_of(name: str) -> str:
    lowered = name.lower()
    return next((f for f in FAMILIES if f in lowered), "other")


def _listing(session: Session) -> tuple[list[str], list[str]]:
    result = session.check(["sh", "-c", LIST_SCRIPT, "idcs-images", TEMPLATE_DIR, session.opts.image_dir],
                           "list images")
    templates, files = [], []
    for line in result.out.splitlines():
        kind, _, name = line.partition(" ")
        if kind == "T" and name not in ("download", "local", "oci"):
            templates.append(name)
        elif kind == "F" and TARBALL.match(name):
            files.append(name)
    return sorted(templates), sorted(files)


def list_images(session: Session) -> list[OSImage]:
    """Templates that need no parameters, then the rootfs tarballs of ``image_dir``."""
    templates, files = _listing(session)
    images = [OSImage(name=f"LXC template {t}", file=t, family=family_of(t), kind=ImageKind.TEMPLATE)
              for t in templates]
    images += [OSImage(name=f.split(".tar")[0], file=f, family=family_of(f), kind=ImageKind.IMAGE) for f in files]
    return images


def resolve(session: Session, os_name: str) -> Source:
    """The source of ``os_name`` on this host; 400 for anything the host does not have."""
    match = DOWNLOAD.match(os_name or "")
    if match:
        dist, release, arch = match.groups()
        return Source(kind="download", template="download", args=["-d", dist, "-r", release, "-a", arch])
    templates, files = _listing(session)
    if os_name in templates:
        return Source(kind="template", template=os_name)
    if os_name in files:
        return Source(kind="tarball", path=f"{session.opts.image_dir}/{os_name}")
    raise errors.BadRequest(f"unknown image {os_name!r}: use one of {templates + files} or "
                            "download:<dist>:<release>:<arch>")
