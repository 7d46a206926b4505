"""Backups: the container committed to an image on the host, with its configuration in labels.

``backup_create`` commits the container (paused for the instant of the
commit, so the snapshot is consistent without stopping it) to
``idcs-backup/<vm>:<backup>``. A commit stores only the container's changes
on top of its image, so it is quick and small, and restoring is creating a
container from it: no archive to unpack. The labels hold the backup's name,
VM, description, time, the container's host configuration and its NAT forwards, so
a backup can bring back a VM that was deleted (forwards included), and ``backup_list`` finds every backup with
one API call.

Not in a backup: data in volumes (extra disks, the image's ``VOLUME`` paths).
A restore keeps those volumes as they are now.

Podman 4's commit ignores the configuration in the request body: there the labels
go as ``LABEL`` instructions (``changes``), whose parser keeps backslashes, so a
value other than plain letters, digits and ``._:/+-`` is stored base64-encoded
behind ``idcs-b64:``; every reader decodes it.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

import docker.errors

from idcs_core import errors
from idcs_core.types import BackupInfo, NatRule, Progress, VMInfo
from idcs_oci import containers, forwarders, lifecycle, naming, network
from idcs_oci.client import Conn
from idcs_oci.containers import Blueprint, no_progress

log = logging.getLogger("idcs.oci")

_B64 = "idcs-b64:"
_PLAIN = re.compile(r"^[A-Za-z0-9._:/+-]+$")


def _encode(value: str) -> str:
    return value if _PLAIN.match(value) and not value.startswith(_B64) else \
        _B64 + base64.urlsafe_b64encode(value.encode()).decode()


def decoded(labels: dict[str, str] | None) -> dict[str, str]:
    """Labels of a backup image as they were given (see the module's note on Podman)."""
    return {k: base64.urlsafe_b64decode(v[len(_B64):]).decode() if isinstance(v, str) and v.startswith(_B64)
            else v for k, v in (labels or {}).items()}


def _commit(conn: Conn, cid: str, repo: str, tag: str, message: str | None, labels: dict[str, str]) -> str:
    if conn.is_podman:
        changes = [f"LABEL {k}={_encode(v)}" for k, v in labels.items()]
        return str(conn.slow_api.commit(cid, repository=repo, tag=tag, message=message, pause=True,
                                        changes=changes)["Id"])
    return str(conn.slow_api.commit(cid, repository=repo, tag=tag, message=message, pause=True,
                                    conf={"Labels": labels})["Id"])


def _info(labels: dict[str, str], size: int | None) -> BackupInfo:
    labels = decoded(labels)
    return BackupInfo(backup_name=labels.get(naming.BACKUP_NAME, ""),
                      vm_uuid=labels.get(naming.BACKUP_VM, ""),
                      description=labels.get(naming.BACKUP_DESCRIPTION, ""), size_bytes=size,
                      created_at=labels.get(naming.BACKUP_CREATED))


def create(conn: Conn, vm_uuid: str, backup_name: str, description: str,
           progress: Progress = no_progress) -> BackupInfo:
    attrs = containers.inspect(conn, vm_uuid)
    ref = naming.backup_ref(vm_uuid, backup_name)
    try:
        conn.api.inspect_image(ref)
        raise errors.Conflict(f"backup {backup_name!r} of {vm_uuid} already exists")
    except docker.errors.ImageNotFound:
        pass
    bp = containers.clone(attrs)
    labels = dict(bp.labels)
    labels.update({
        naming.BACKUP: "1", naming.BACKUP_VM: vm_uuid, naming.BACKUP_NAME: backup_name,
        naming.BACKUP_DESCRIPTION: description or "",
        naming.BACKUP_CREATED: datetime.now(UTC).isoformat(timespec="seconds"),
        naming.BACKUP_HOST_CONFIG: json.dumps({"HostConfig": bp.host_config, "Endpoints": bp.endpoints, "Nat": [
            [f.rule.host_port, f.rule.vm_port, f.rule.protocol] for f in forwarders.of_vm(conn, vm_uuid)]}),
    })
    progress(20, "committing the container's filesystem")
    repo, tag = ref.rsplit(":", 1)
    image_id = _commit(conn, attrs["Id"], repo, tag, description or None, labels)
    image = conn.api.inspect_image(image_id)
    progress(100, "backup created")
    return _info((image.get("Config") or {}).get("Labels") or {}, image.get("Size"))


def _backup_image(conn: Conn, vm_uuid: str, backup_name: str) -> tuple[str, dict[str, Any]]:
    ref = naming.backup_ref(vm_uuid, backup_name)
    try:
        image = conn.api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        raise errors.NotFound(
            f"backup {backup_name!r} of {vm_uuid} does not exist on host {conn.host.name}") from None
    labels = decoded((image.get("Config") or {}).get("Labels"))
    if labels.get(naming.BACKUP_VM) != vm_uuid or labels.get(naming.BACKUP_NAME) != backup_name:
        raise errors.NotFound(f"{ref} is not backup {backup_name!r} of {vm_uuid}")
    return ref, image


def _forget_backup_labels(bp: Blueprint) -> Blueprint:
    """A restored container inherits the backup image's labels: blank the backup ones."""
    bp.labels.update(dict.fromkeys(naming.BACKUP_LABELS, ""))
    return bp


def restore(conn: Conn, vm_uuid: str, backup_name: str, progress: Progress = no_progress) -> VMInfo:
    """The VM's filesystem as it was at the backup; name, limits, ports and disks as they are now.

    If the container is gone, it is created again from the configuration stored with the backup.
    """
    ref, image = _backup_image(conn, vm_uuid, backup_name)
    try:
        attrs = conn.api.inspect_container(naming.check_vm_uuid(vm_uuid))
    except docker.errors.NotFound:
        attrs = None
    if attrs is not None:
        containers.recreate(conn, attrs, _forget_backup_labels, source=ref, progress=progress)
    else:
        progress(30, "creating the container from the backup")
        labels = decoded((image.get("Config") or {}).get("Labels"))
        saved = json.loads(labels.get(naming.BACKUP_HOST_CONFIG) or "{}")
        config = dict(image.get("Config") or {})
        config.update({"Image": ref, "HostConfig": saved.get("HostConfig") or {}, "Labels": labels})
        bp = _forget_backup_labels(Blueprint(vm_uuid, config, saved.get("Endpoints") or {}))
        cid = containers.create(conn, bp)
        try:
            conn.api.start(cid)
        except BaseException:
            containers.remove_quietly(conn, cid)
            raise
        _reopen_forwards(conn, vm_uuid, saved.get("Nat") or [])
    progress(100, "restored")
    return lifecycle.status(conn, vm_uuid, sample=False)


def _reopen_forwards(conn: Conn, vm_uuid: str, saved: list[list[Any]]) -> None:
    """The NAT forwards a deleted VM had at its backup, back where their ports are still free (a
    port taken meanwhile is logged: the VM is restored, that forward is not)."""
    try:
        network.sync(conn, vm_uuid, [NatRule(int(p), int(v), str(proto)) for p, v, proto in saved])
    except errors.IDCSError as exc:
        log.warning("NAT forwards of restored %s on %s not all restored: %s", vm_uuid, conn.host.name, exc)


def delete(conn: Conn, vm_uuid: str, backup_name: str) -> None:
    """Remove the backup's tag; its layers go once no container or image still uses them."""
    ref = naming.backup_ref(vm_uuid, backup_name)
    try:
        conn.api.remove_image(ref)
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:
            raise
        # A container restored from this backup still runs on its layers. A forced removal would
        # untag on Docker but remove that container too on Podman: the layers take the VM's state
        # tag first (the filesystem its container runs on; dropped with the VM), then the backup's
        # tag alone goes (an image with two tags is only untagged, on both).
        _keep_as_state(conn, vm_uuid, ref)
        conn.api.remove_image(ref)


def _keep_as_state(conn: Conn, vm_uuid: str, ref: str) -> None:
    """Tag the image of ``ref`` as the VM's state image (``naming.state_ref``); the image that tag
    named before is pruned if nothing uses it any more."""
    state = naming.state_ref(vm_uuid)
    try:
        previous: str | None = conn.api.inspect_image(state)["Id"]
    except docker.errors.ImageNotFound:
        previous = None
    image_id = conn.api.inspect_image(ref)["Id"]
    repo, tag = state.rsplit(":", 1)
    conn.api.tag(image_id, repo, tag, force=True)
    if previous and previous != image_id:
        containers.prune_image(conn, previous)


def list_all(conn: Conn) -> list[BackupInfo]:
    result = []
    for img in conn.api.images(filters={"label": f"{naming.BACKUP}=1"}):
        if any(naming.short_tag(t).startswith(naming.BACKUP_REPO + "/") for t in img.get("RepoTags") or []):
            result.append(_info(img.get("Labels") or {}, img.get("Size")))
    result.sort(key=lambda b: (b.vm_uuid, b.created_at or "", b.backup_name))
    return result
