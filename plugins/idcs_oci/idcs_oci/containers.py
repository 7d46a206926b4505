"""Container mechanics: find a VM's container, create one, and recreate it keeping its data.

Docker cannot add a published port or a mount to an existing container, so
NAT rules, extra disks and a larger disk limit need a new container. The
recreation here keeps everything the old one had:

1. The old container's full create body is cloned from ``inspect``
   (``Config`` + ``HostConfig`` + network endpoints), so limits, restart policy,
   capabilities, hostname, environment and command are unchanged; anonymous
   volumes are re-mounted *by name*, so data in the image's ``VOLUME`` paths
   and in attached disks is reused, never copied.
2. The old container is stopped gracefully, then its writable layer is
   committed to ``idcs-state/<vm>:current`` (only the changes since the last
   recreation: a commit stores the diff). The new container is created from
   that image, so files written inside the container survive.
3. The old container is only renamed ("parked" as ``<vm>.idcs-old-<hex>[-running|-paused]``,
   the suffix recording its power state) until the new one runs; if anything
   fails (a host port taken, a bad mount) the new one is removed, the old one
   gets its name back and is started again: nothing is lost. If the control
   plane dies in between, ``recover_parked`` finishes the job on the next call
   that touches the VM: a parked container whose VM has no container gets the
   VM's name (and power state) back; one whose replacement exists is removed.
4. Each commit adds one image layer. Before the chain would exceed the host
   option ``max_layers`` (default 100; overlay2 refuses about 125), the
   filesystem is flattened instead: ``export`` streamed into ``import``.
"""

from __future__ import annotations

import copy
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker.errors

from idcs_core import errors
from idcs_core.types import Progress
from idcs_oci import naming
from idcs_oci.client import Conn
from idcs_oci.errors import explain

log = logging.getLogger("idcs.oci")

RUNNING_STATES = ("running", "paused", "restarting")
PARKED = ".idcs-old-"  # name infix of an old container kept until its replacement runs
_PARKED_TAIL = re.compile(r"^[0-9a-f]+(?:-(running|paused))?$")


def no_progress(percent: int, message: str = "") -> None:
    """Stand-in when the caller passed no progress callback."""


def inspect(conn: Conn, vm_uuid: str) -> dict[str, Any]:
    """``docker inspect`` of the VM's container; ``VMNotFound`` if it is not on the host."""
    try:
        return conn.api.inspect_container(naming.check_vm_uuid(vm_uuid))
    except docker.errors.NotFound:
        raise errors.VMNotFound(f"container {vm_uuid} does not exist on host {conn.host.name}") from None


@dataclass
class Blueprint:
    """A container's create body (``Config`` with ``HostConfig`` inside) and its network endpoints."""

    name: str
    config: dict[str, Any]
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def host_config(self) -> dict[str, Any]:
        return self.config.setdefault("HostConfig", {})

    @property
    def labels(self) -> dict[str, str]:
        labels = self.config.get("Labels")
        if labels is None:
            labels = self.config["Labels"] = {}
        return labels

    def set_port_bindings(self, bindings: dict[str, list[dict[str, str]]]) -> None:
        self.host_config["PortBindings"] = bindings
        exposed = self.config.get("ExposedPorts") or {}
        exposed.update({key: {} for key in bindings})
        self.config["ExposedPorts"] = exposed

    def volume_mounts(self) -> dict[str, str]:
        """Named volume -> mount point, over ``Binds`` and ``Mounts``."""
        result = {}
        for bind in self.host_config.get("Binds") or []:
            parts = bind.split(":")
            if len(parts) >= 2 and not parts[0].startswith("/"):
                result[parts[0]] = parts[1]
        for m in self.host_config.get("Mounts") or []:
            if m.get("Type") == "volume" and m.get("Source"):
                result[m["Source"]] = m["Target"]
        return result

    def add_volume(self, volume: str, target: str) -> None:
        mounts = self.host_config.get("Mounts") or []
        mounts.append({"Type": "volume", "Source": volume, "Target": target})
        self.host_config["Mounts"] = mounts

    def remove_volume(self, volume: str) -> None:
        hc = self.host_config
        if hc.get("Binds"):
            hc["Binds"] = [b for b in hc["Binds"] if b.split(":")[0] != volume]
        if hc.get("Mounts"):
            hc["Mounts"] = [m for m in hc["Mounts"] if m.get("Source") != volume]


def _mount_targets(host_config: dict[str, Any]) -> set[str]:
    targets = {b.split(":")[1] for b in host_config.get("Binds") or [] if b.count(":") >= 1}
    targets |= {m.get("Target") for m in host_config.get("Mounts") or []}
    targets |= set(host_config.get("Tmpfs") or {})
    return targets


def clone(attrs: dict[str, Any]) -> Blueprint:
    """The create body that makes a container equal to the inspected one."""
    config = copy.deepcopy(attrs.get("Config") or {})
    host_config = copy.deepcopy(attrs.get("HostConfig") or {})
    declared = _mount_targets(host_config)
    for m in attrs.get("Mounts") or []:
        # Anonymous volumes (the image's VOLUME paths) are not in HostConfig: mount them by name.
        if m.get("Type") == "volume" and m.get("Name") and m.get("Destination") not in declared:
            host_config["Mounts"] = (host_config.get("Mounts") or []) + [
                {"Type": "volume", "Source": m["Name"], "Target": m["Destination"],
                 "ReadOnly": not m.get("RW", True)}]
    if host_config.get("NanoCpus"):
        # Podman's inspect also reports the period and quota it derived from NanoCpus, and refuses
        # a create body with both ("NanoCpus conflicts with CpuPeriod and CpuQuota").
        host_config["CpuPeriod"] = host_config["CpuQuota"] = 0
    for limit in host_config.get("Ulimits") or []:
        # Podman's inspect names them RLIMIT_NOFILE...; its create (like Docker's) wants nofile.
        name = str(limit.get("Name", ""))
        if name.upper().startswith("RLIMIT_"):
            limit["Name"] = name[len("RLIMIT_"):].lower()
    config["HostConfig"] = host_config
    short_id = attrs.get("Id", "")[:12]
    endpoints: dict[str, dict[str, Any]] = {}
    for net, ep in ((attrs.get("NetworkSettings") or {}).get("Networks") or {}).items():
        endpoints[net] = {
            "IPAMConfig": ep.get("IPAMConfig"),
            "Links": ep.get("Links"),
            "Aliases": [a for a in ep.get("Aliases") or [] if a != short_id] or None,
            "DriverOpts": ep.get("DriverOpts"),
        }
    if host_config.get("NetworkMode") in ("bridge", "default") and endpoints and "bridge" not in endpoints:
        # Podman says "bridge" for a container on a named CNI/netavark network: name that network.
        host_config["NetworkMode"] = next(iter(endpoints))
    return Blueprint(attrs.get("Name", "").lstrip("/"), config, endpoints)


def _primary_network(bp: Blueprint) -> str | None:
    mode = bp.host_config.get("NetworkMode") or "default"
    if mode in ("host", "none") or mode.startswith("container:"):
        return None
    if mode == "default":
        return "bridge" if "bridge" in bp.endpoints else None
    return mode


def create(conn: Conn, bp: Blueprint) -> str:
    """Create the container of ``bp`` (not started), joined to all its networks; return its id."""
    body = dict(bp.config)
    primary = _primary_network(bp)
    if primary:
        body["NetworkingConfig"] = {"EndpointsConfig": {primary: bp.endpoints.get(primary) or {}}}
    cid: str = conn.api.create_container_from_config(body, name=bp.name)["Id"]
    try:
        for net, ep in bp.endpoints.items():
            if net == primary or net in ("host", "none"):
                continue
            ipam = ep.get("IPAMConfig") or {}
            conn.api.connect_container_to_network(
                cid, net, ipv4_address=ipam.get("IPv4Address") or None,
                ipv6_address=ipam.get("IPv6Address") or None, aliases=ep.get("Aliases"),
                links=ep.get("Links"))
    except Exception:
        remove_quietly(conn, cid)
        raise
    return cid


def remove_quietly(conn: Conn, cid: str, volumes: bool = False) -> None:
    """Force-remove a container; a container already gone is fine; other failures are logged."""
    try:
        conn.slow_api.remove_container(cid, force=True, v=volumes)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        log.warning("could not remove container %s on %s: %s", cid[:12], conn.host.name, explain(exc))


def prune_image(conn: Conn, image_id: str) -> None:
    """Delete ``image_id`` if it has no tag left and nothing uses it (never a tagged OS image)."""
    try:
        if conn.api.inspect_image(image_id).get("RepoTags"):
            return
        conn.api.remove_image(image_id)
    except docker.errors.APIError:
        pass  # in use by a container or a parent of other images: it stays, as it must


def drop_state(conn: Conn, vm_uuid: str) -> None:
    """Untag the saved filesystem of ``vm_uuid``; its layers stay while an image or container uses them."""
    try:
        conn.api.remove_image(naming.state_ref(vm_uuid))
    except docker.errors.APIError:
        pass


def save_state(conn: Conn, attrs: dict[str, Any]) -> str:
    """Store the (stopped) container's filesystem as ``idcs-state/<vm>:current``; return that reference."""
    vm = attrs.get("Name", "").lstrip("/")
    ref = naming.state_ref(vm)
    repo, tag = ref.rsplit(":", 1)
    layers = len((conn.api.inspect_image(attrs["Image"]).get("RootFS") or {}).get("Layers") or [])
    if layers + 1 <= conn.opts.max_layers:
        conn.slow_api.commit(attrs["Id"], repository=repo, tag=tag, pause=False)
    else:
        log.info("flattening the filesystem of %s on %s (%d layers)", vm, conn.host.name, layers)
        conn.slow_api.import_image(src=conn.slow_api.export(attrs["Id"]), repository=repo, tag=tag,
                                   stream_src=True)
    return ref


def recreate(conn: Conn, attrs: dict[str, Any], edit: Callable[[Blueprint], Blueprint],
             *, source: str | None = None, progress: Progress = no_progress) -> dict[str, Any]:
    """Replace the container of ``attrs`` by one made from ``edit(clone(attrs))``.

    ``source`` None keeps the container's files (committed first); an image
    reference instead makes the new container from that image (restore,
    reinstall). The power state is kept (running, paused or stopped). Returns
    the new container's ``inspect``.
    """
    old_id, name = attrs["Id"], attrs.get("Name", "").lstrip("/")
    state = (attrs.get("State") or {}).get("Status", "")
    was_running = state in RUNNING_STATES
    bp = edit(clone(attrs))
    bp.name = name
    replaced = source is not None
    renamed, new_id = False, None
    try:
        if was_running:
            progress(20, "stopping the container")
            conn.api.stop(old_id, timeout=conn.opts.stop_timeout)
        if source is None:
            progress(40, "saving the container's filesystem")
            source = save_state(conn, attrs)
        bp.config["Image"] = source
        conn.api.rename(old_id, parked_name(name, state))
        renamed = True
        progress(60, "creating the new container")
        new_id = create(conn, bp)
        if was_running:
            progress(80, "starting the new container")
            conn.api.start(new_id)
            if state == "paused":
                conn.api.pause(new_id)
    except BaseException:
        _roll_back(conn, old_id, name if renamed else None, new_id, state)
        raise
    remove_quietly(conn, old_id)
    if replaced:  # the old filesystem is gone for good: so is its saved copy
        drop_state(conn, name)
    prune_image(conn, attrs["Image"])
    progress(95, "container recreated")
    return conn.api.inspect_container(new_id)


def _roll_back(conn: Conn, old_id: str, rename_to: str | None, new_id: str | None, state: str) -> None:
    """Put the old container back as it was (its name, its power state); log, never raise, if that
    fails too."""
    try:
        if new_id:
            remove_quietly(conn, new_id)
        if rename_to:
            conn.api.rename(old_id, rename_to)
        if state in RUNNING_STATES and conn.api.inspect_container(old_id)["State"]["Status"] in (
                "created", "exited"):
            conn.api.start(old_id)
            if state == "paused":
                conn.api.pause(old_id)
    except Exception as exc:
        log.error("could not restore container %s (%s) on %s after a failed recreation: %s",
                  rename_to or "", old_id[:12], conn.host.name, explain(exc))


# ------------------------------------------------------------------ parked containers


def parked_name(vm_uuid: str, state: str) -> str:
    """The name a container is parked under during its recreation; it records whether it ran."""
    suffix = {"running": "-running", "restarting": "-running", "paused": "-paused"}.get(state, "")
    return f"{vm_uuid}{PARKED}{secrets.token_hex(3)}{suffix}"


def parse_parked(name: str) -> tuple[str, str] | None:
    """(vm_uuid, power state to restore: running, paused or "") of a parked container's name."""
    vm, sep, tail = name.lstrip("/").rpartition(PARKED)
    found = _PARKED_TAIL.match(tail) if sep and vm else None
    return (vm, found.group(1) or "") if found else None


def parked_of(conn: Conn, vm_uuid: str) -> list[dict[str, Any]]:
    """The VM's parked containers (list summaries), newest first."""
    items = conn.api.containers(all=True, filters={"name": f"{vm_uuid}{PARKED}"})
    mine = [i for i in items if any((parse_parked(n) or ("",))[0] == vm_uuid for n in i.get("Names") or [])]
    return sorted(mine, key=lambda i: i.get("Created") or 0, reverse=True)


def _parked_state(item: dict[str, Any]) -> str:
    return next((p[1] for n in item.get("Names") or [] if (p := parse_parked(n))), "")


def _power_up(conn: Conn, cid: str, state: str) -> None:
    """Bring a stopped or never-started container to ``state`` (running or paused); a failure is
    logged (the VM is there, stopped: it can be started by hand), never raised."""
    if state not in ("running", "paused"):
        return
    try:
        conn.api.start(cid)
        if state == "paused":
            conn.api.pause(cid)
    except docker.errors.APIError as exc:
        log.warning("could not start recovered container %s on %s: %s", cid[:12], conn.host.name, explain(exc))


def recover_parked(conn: Conn, vm_uuid: str) -> bool:
    """Finish a recreation cut short (the control plane died while the old container was parked).

    The caller holds the VM's lock, so no recreation of this process is under way. With no
    container named ``vm_uuid``, the newest parked one gets the name back, and its power state;
    with one, that is the replacement (started if it never was and the old one ran) and the
    parked ones are removed. Returns True if the VM has a container now and anything changed.
    """
    parked = parked_of(conn, vm_uuid)
    if not parked:
        return False
    try:
        current: dict[str, Any] | None = conn.api.inspect_container(vm_uuid)
    except docker.errors.NotFound:
        current = None
    if current is None:
        keep, parked = parked[0], parked[1:]
        state = _parked_state(keep)
        log.warning("container %s on %s was left parked by an interrupted recreation: restoring it (%s)",
                    vm_uuid, conn.host.name, state or "stopped")
        conn.api.rename(keep["Id"], vm_uuid)
        if keep.get("State") in ("created", "exited", "dead"):
            _power_up(conn, keep["Id"], state)
    else:
        parked = [i for i in parked if i["Id"] != current["Id"]]
        if not parked:
            return False
        state = _parked_state(parked[0])
        log.warning("removing %d container(s) of %s on %s left parked by an interrupted recreation",
                    len(parked), vm_uuid, conn.host.name)
        if (current.get("State") or {}).get("Status") == "created":  # made, never started
            _power_up(conn, current["Id"], state)
    for item in parked:
        remove_quietly(conn, item["Id"])
        if item.get("ImageID"):
            prune_image(conn, item["ImageID"])
    return True
