"""Images a VM can be created from: listing them by OS family, and resolving a reference."""

from __future__ import annotations

from typing import Any

import docker.errors

from idcs_core import errors
from idcs_core.types import OSImage
from idcs_oci import naming
from idcs_oci.client import Conn
from idcs_oci.errors import explain

# Family -> words that mark it in a repository's last path component.
_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ubuntu", ("ubuntu",)),
    ("debian", ("debian",)),
    ("centos", ("centos", "rocky", "almalinux", "rhel")),
    ("alpine", ("alpine",)),
    ("busybox", ("busybox",)),
)


def family_of(reference: str) -> str:
    """Guess the OS family from an image reference (``docker.io/library/ubuntu:22.04`` -> ubuntu)."""
    repo = reference.rsplit("@", 1)[0]
    last = repo.rsplit("/", 1)[-1]
    if ":" in last:
        last = last.split(":", 1)[0]
    for family, words in _FAMILIES:
        if last.startswith(words):
            return family
    return "other"


def pretty_name(reference: str) -> str:
    """``ubuntu:22.04`` -> ``Ubuntu 22.04`` for official images; others are shown as they are."""
    repo, _, tag = reference.rpartition(":")
    if not repo or "/" in repo or "/" in tag:
        return reference
    return f"{repo.capitalize()} {tag}"


def list_os_images(conn: Conn) -> list[OSImage]:
    """Every tagged image on the host except the engine's own state and backup images."""
    result: list[OSImage] = []
    for img in conn.api.images():
        for tag in img.get("RepoTags") or []:
            if tag == "<none>:<none>" or naming.is_own_image(tag):
                continue
            result.append(OSImage(name=pretty_name(tag), file=tag, family=family_of(tag)))
    result.sort(key=lambda i: (i.family, i.file))
    return result


def resolve(conn: Conn, reference: str) -> dict[str, Any]:
    """Inspect the image ``reference`` (pulling it first if the host allows); BadRequest if unknown."""
    if not reference or not reference.strip():
        raise errors.BadRequest("os_name (the image reference) is empty")
    try:
        return conn.api.inspect_image(reference)
    except docker.errors.ImageNotFound as exc:
        if not conn.opts.pull_missing:
            raise errors.BadRequest(f"image {reference!r} is not on host {conn.host.name} "
                                    f"(pull it there, or set the host option pull_missing)") from exc
    except docker.errors.APIError as exc:
        if exc.status_code in (400, 404):
            raise errors.BadRequest(f"image {reference!r}: {explain(exc)}") from exc
        raise
    try:
        conn.slow_api.pull(reference)
        return conn.api.inspect_image(reference)
    except docker.errors.APIError as exc:
        raise errors.BadRequest(f"image {reference!r} could not be pulled: {explain(exc)}") from exc
