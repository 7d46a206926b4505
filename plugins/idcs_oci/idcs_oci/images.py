"""Images a VM can be created from: listing them by OS family, and resolving a reference.

One image has one name on every host: ``canonical`` gives Docker's short form (``debian:12``),
whether the reference came as ``debian``, ``docker.io/library/debian:12`` or as Podman lists
every image (``docker.io/...``). The image list, create and reinstall all go through it, so the
name the create form offers, the one a user types and the one a VM records are the same.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import docker.errors

from idcs_core import errors
from idcs_core.types import OSImage, VMSpec
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


DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


def _split_registry(name: str) -> tuple[str, str]:
    """(registry, path): the first component is a registry if it has a dot or a port or is localhost."""
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return "", name


def canonical(reference: str) -> str:
    """Docker's short form of an image reference: Docker Hub's registry and ``library/`` left out,
    ``:latest`` when no tag or digest is given (``docker.io/library/debian`` -> ``debian:latest``)."""
    name, at, digest = reference.strip().partition("@")
    registry, path = _split_registry(name)
    if registry in DOCKER_HUB:
        registry = ""
    if not registry and path.startswith("library/") and path.count("/") == 1:
        path = path[len("library/"):]
    if not at and ":" not in path.rsplit("/", 1)[-1]:
        path += ":latest"
    return f"{registry}/{path}{at}{digest}" if registry else f"{path}{at}{digest}"


def qualified(reference: str) -> str:
    """The fully qualified form to pull (Podman may refuse a short name to pull with no search registry)."""
    short = canonical(reference)
    registry, path = _split_registry(short)
    if registry:
        return short
    return f"docker.io/{path}" if "/" in path.split("@", 1)[0] else f"docker.io/library/{path}"


def with_canonical_image(spec: VMSpec) -> VMSpec:
    """``spec`` naming its image by ``canonical`` (what create and reinstall record on the VM)."""
    if not spec.os_name or not spec.os_name.strip():
        return spec  # resolve says what is wrong
    return dataclasses.replace(spec, os_name=canonical(spec.os_name))


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
    names: set[str] = set()
    for img in conn.api.images():
        for tag in img.get("RepoTags") or []:
            if tag == "<none>:<none>" or naming.is_own_image(tag):
                continue
            names.add(canonical(tag))
    result = [OSImage(name=pretty_name(name), file=name, family=family_of(name)) for name in names]
    result.sort(key=lambda i: (i.family, i.file))
    return result


def resolve(conn: Conn, reference: str) -> dict[str, Any]:
    """Inspect the image ``reference`` (``canonical`` already; pulled first if the host allows and it
    is missing); BadRequest if unknown."""
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
        conn.slow_api.pull(qualified(reference))
        return conn.api.inspect_image(reference)
    except docker.errors.APIError as exc:
        raise errors.BadRequest(f"image {reference!r} could not be pulled: {explain(exc)}") from exc
