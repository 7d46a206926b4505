"""VM lifecycle: create, update, reinstall, delete, status, list and power actions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import docker.errors

from idcs_core import errors
from idcs_core.types import PowerAction, Progress, VMInfo, VMSpec
from idcs_oci import containers, forwarders, guest, images, naming, vminfo
from idcs_oci.client import Conn
from idcs_oci.containers import Blueprint, no_progress
from idcs_oci.errors import explain

_MB = 1024 * 1024
_SHELLS = {"sh", "bash", "ash", "dash", "zsh", "ksh", "mksh"}


def _limits(spec: VMSpec) -> dict[str, int]:
    if spec.cpu_num < 0 or spec.ram_num < 0 or spec.hdd_num < 0:
        raise errors.BadRequest("cpu_num, ram_num and hdd_num must not be negative")
    memory = spec.ram_num * _MB
    # MemorySwap is set with Memory so a later live update can move both (Docker refuses to raise
    # Memory above an older MemorySwap). Twice the memory is Docker's own default.
    return {"NanoCpus": spec.cpu_num * 10**9, "Memory": memory, "MemorySwap": 2 * memory if memory else 0}


def new_blueprint(conn: Conn, spec: VMSpec, image: dict[str, Any]) -> Blueprint:
    """The create body of a fresh VM container from ``spec`` and the inspected image."""
    labels = {naming.MANAGED: "1", naming.VM_UUID: spec.vm_uuid, naming.OS_NAME: spec.os_name,
              naming.HDD_NUM: str(spec.hdd_num), naming.HDD_ENFORCED: "0"}
    if spec.vm_name:
        labels[naming.VM_NAME] = spec.vm_name
    host_config: dict[str, Any] = {"Init": True, "RestartPolicy": {"Name": conn.opts.restart_policy},
                                   **_limits(spec)}
    endpoints: dict[str, dict[str, Any]] = {}
    if conn.opts.network:
        host_config["NetworkMode"] = conn.opts.network
        endpoints[conn.opts.network] = {}
    config: dict[str, Any] = {
        "Image": spec.os_name, "Hostname": naming.hostname_for(spec.vm_uuid), "Labels": labels,
        # A TTY and an open stdin keep the image's own shell CMD (ubuntu's "bash") alive, the
        # way `docker run -dit` does; images running a service keep running it.
        "Tty": True, "OpenStdin": True, "HostConfig": host_config,
    }
    image_config = image.get("Config") or {}
    if not image_config.get("Cmd") and not image_config.get("Entrypoint"):
        config["Cmd"] = ["/bin/sh"]
    cmd = config.get("Cmd") or image_config.get("Cmd") or []
    if (not image_config.get("Entrypoint") and not image_config.get("StopSignal") and len(cmd) == 1
            and cmd[0].rsplit("/", 1)[-1] in _SHELLS):
        # An interactive shell ignores SIGTERM, so `docker stop` would wait stop_timeout and kill;
        # a hang-up ends it at once, as closing its terminal would.
        config["StopSignal"] = "SIGHUP"
    return Blueprint(spec.vm_uuid, config, endpoints)


def _set_disk_limit(bp: Blueprint, hdd_gb: int | None) -> None:
    if hdd_gb:
        bp.host_config["StorageOpt"] = {"size": f"{hdd_gb}G"}
        bp.labels[naming.HDD_ENFORCED] = "1"
    else:
        bp.host_config.pop("StorageOpt", None)
        bp.labels[naming.HDD_ENFORCED] = "0"


def _storage_opt_refused(exc: docker.errors.APIError) -> bool:
    text = explain(exc).lower()
    return "storage" in text and ("opt" in text or "quota" in text or "size" in text)


def _create_with_disk_limit(conn: Conn, bp: Blueprint, hdd_gb: int) -> str:
    """Create with a root-disk size limit where the storage driver enforces one, else without.

    Docker supports ``--storage-opt size`` only on some drivers (overlay2 on xfs with
    pquota, btrfs, zfs...). The first refusal is remembered for the host.
    """
    if hdd_gb > 0 and conn.facts.get("storage_size") is not False:
        _set_disk_limit(bp, hdd_gb)
        try:
            cid = containers.create(conn, bp)
            conn.facts["storage_size"] = True
            return cid
        except docker.errors.APIError as exc:
            if not _storage_opt_refused(exc):
                raise
            conn.facts["storage_size"] = False
    _set_disk_limit(bp, None)
    return containers.create(conn, bp)


def create_vm(conn: Conn, spec: VMSpec, progress: Progress = no_progress) -> VMInfo:
    naming.check_vm_uuid(spec.vm_uuid)
    spec = images.with_canonical_image(spec)
    image = images.resolve(conn, spec.os_name)
    progress(10, "image found")
    bp = new_blueprint(conn, spec, image)
    cid = _create_with_disk_limit(conn, bp, spec.hdd_num)
    try:
        progress(60, "starting the container")
        conn.api.start(cid)
    except BaseException:
        containers.remove_quietly(conn, cid, volumes=True)
        raise
    extra: dict[str, Any] = {}
    if spec.config.get("os_pass"):
        progress(80, "setting the root password")
        try:
            guest.set_password(conn, spec.vm_uuid, "root", str(spec.config["os_pass"]))
            extra["password_set"] = True
        except errors.IDCSError as exc:  # "set it if you can": the VM itself is fine
            extra["password_set"] = False
            extra["password_error"] = exc.msg
    info = status(conn, spec.vm_uuid, sample=False)
    info.extra.update(extra)
    progress(100, "created")
    return info


def _raw_update(conn: Conn, cid: str, body: dict[str, Any]) -> None:
    """POST /containers/{id}/update with fields the SDK's update_container lacks (NanoCpus)."""
    url = f"{conn.api.base_url}/v{conn.api.api_version}/containers/{cid}/update"
    response = conn.api.post(url, json=body)
    try:
        response.raise_for_status()
    except Exception as exc:
        raise docker.errors.create_api_error_from_http_exception(exc) from exc


def update_vm(conn: Conn, spec: VMSpec, progress: Progress = no_progress) -> VMInfo:
    """CPU and memory change live; a larger enforced disk limit recreates the container (data kept)."""
    attrs = containers.inspect(conn, spec.vm_uuid)
    limits = _limits(spec)
    progress(20, "updating CPU and memory limits")
    try:
        _raw_update(conn, attrs["Id"], limits)
    except docker.errors.NotFound:
        if not conn.is_podman:
            raise
        # Podman 4 has no Docker-style update endpoint (and its own does not show in inspect):
        # the container is recreated with the new limits, its data kept.
        def relimit(bp: Blueprint) -> Blueprint:
            bp.host_config.update(limits)
            bp.host_config["CpuPeriod"] = bp.host_config["CpuQuota"] = 0
            return bp

        attrs = containers.recreate(conn, attrs, relimit, progress=progress)
    size = ((attrs.get("HostConfig") or {}).get("StorageOpt") or {}).get("size")
    if size:
        current = vminfo.size_gb(size) or 0
        if spec.hdd_num < current:
            raise errors.BadRequest(f"the root disk of {spec.vm_uuid} cannot shrink from {current} GB "
                                    f"to {spec.hdd_num} GB")
        if spec.hdd_num > current:
            def grow(bp: Blueprint) -> Blueprint:
                _set_disk_limit(bp, spec.hdd_num)
                bp.labels[naming.HDD_NUM] = str(spec.hdd_num)
                return bp
            containers.recreate(conn, containers.inspect(conn, spec.vm_uuid), grow, progress=progress)
    progress(100, "updated")
    return status(conn, spec.vm_uuid, sample=False)


def reinstall_vm(conn: Conn, spec: VMSpec, progress: Progress = no_progress) -> VMInfo:
    """A fresh container from ``spec.os_name`` with the old name, hostname, ports, networks and disks."""
    spec = images.with_canonical_image(spec)
    attrs = containers.inspect(conn, spec.vm_uuid)
    image = images.resolve(conn, spec.os_name)
    old_hc = attrs.get("HostConfig") or {}

    def fresh(old: Blueprint) -> Blueprint:
        bp = new_blueprint(conn, spec, image)
        bp.endpoints = old.endpoints
        bp.config["Hostname"] = old.config.get("Hostname") or bp.config["Hostname"]
        for key in ("NetworkMode", "RestartPolicy"):
            if old.host_config.get(key):  # from the clone: Podman's "bridge" is named there
                bp.host_config[key] = old.host_config[key]
        bp.set_port_bindings(old_hc.get("PortBindings") or {})
        disk_prefix = naming.volume_name(spec.vm_uuid, "")
        for volume, target in old.volume_mounts().items():
            if volume.startswith(disk_prefix):
                bp.add_volume(volume, target)
        _set_disk_limit(bp, spec.hdd_num if (old_hc.get("StorageOpt") or {}).get("size") else None)
        return bp

    containers.recreate(conn, attrs, fresh, source=spec.os_name, progress=progress)
    progress(100, "reinstalled")
    return status(conn, spec.vm_uuid, sample=False)


def delete_vm(conn: Conn, vm_uuid: str, progress: Progress = no_progress) -> None:
    """Remove the container (and any left parked by an interrupted recreation), its anonymous
    volumes, its extra disks and its saved filesystem."""
    naming.check_vm_uuid(vm_uuid)
    try:
        attrs: dict[str, Any] | None = conn.api.inspect_container(vm_uuid)
    except docker.errors.NotFound:
        attrs = None
    if attrs is not None:
        progress(30, "removing the container")
        conn.slow_api.remove_container(attrs["Id"], force=True, v=True)
    for item in containers.parked_of(conn, vm_uuid):
        progress(40, "removing a container left parked by an interrupted recreation")
        try:
            conn.slow_api.remove_container(item["Id"], force=True, v=True)
        except docker.errors.NotFound:
            pass
        if item.get("ImageID"):
            containers.prune_image(conn, item["ImageID"])
    for fwd in forwarders.of_vm(conn, vm_uuid):
        progress(50, "removing NAT forwards")
        forwarders.close_forward(conn, fwd)
    progress(60, "removing disks")
    for vol in conn.api.volumes(filters={"label": f"{naming.VM_UUID}={vm_uuid}"}).get("Volumes") or []:
        try:
            conn.api.remove_volume(vol["Name"], force=True)
        except docker.errors.NotFound:
            pass
    containers.drop_state(conn, vm_uuid)
    if attrs is not None:
        containers.prune_image(conn, attrs["Image"])
    progress(100, "deleted")


def status(conn: Conn, vm_uuid: str, sample: bool = True) -> VMInfo:
    """Live state; with ``sample`` a non-streaming stats call adds CPU/memory usage (running only)."""
    attrs = containers.inspect(conn, vm_uuid)
    stats = None
    if sample and (attrs.get("State") or {}).get("Status") == "running":
        try:
            stats = conn.api.stats(attrs["Id"], stream=False)
        except docker.errors.APIError:
            stats = None  # it stopped meanwhile: state without usage
    return vminfo.from_inspect(attrs, stats)


def list_vms(conn: Conn, recover: Callable[[str], bool] | None = None,
             follow: Callable[[str], None] | None = None) -> list[VMInfo]:
    """Every container of the host in one call; a container parked during a recreation and NAT
    forwarders are left out.

    For each VM with parked containers, ``recover(vm_uuid)`` may finish a recreation that was cut
    short (``containers.recover_parked``); it returns True if it changed anything (False while a
    recreation of the VM is under way), and then the list is read again. For each VM whose NAT
    forwarders the list shows out of step with it (it stopped, restarted or moved on its own),
    ``follow(vm_uuid)`` may bring them in step (``network.follow``).
    """
    items = conn.api.containers(all=True)
    parked = {found[0] for item in items for name in item.get("Names") or []
              if (found := containers.parse_parked(name))}
    if parked and recover is not None and any([recover(vm) for vm in sorted(parked)]):
        items = conn.api.containers(all=True)
    if follow is not None:
        for vm in forwarders.stale_vms(items, conn.opts.nat_bind):
            follow(vm)
    return [vminfo.from_summary(item) for item in items
            if not any(containers.PARKED in n for n in item.get("Names") or []) and not forwarders.is_forwarder(item)]


# ------------------------------------------------------------------ power
# Docker's answers when the container reached the wanted state on its own meanwhile.
_ALREADY = ("is not running", "is not paused", "is already paused", "already in progress")


def power(conn: Conn, vm_uuid: str, action: PowerAction) -> VMInfo:
    """Apply a power action; repeating one ("start" a running VM, "power off" a stopped one)
    succeeds without a call, as each first looks at the container's state."""
    attrs = containers.inspect(conn, vm_uuid)
    cid = attrs["Id"]
    state = (attrs.get("State") or {}).get("Status", "")
    running = state in containers.RUNNING_STATES
    api = conn.api
    try:
        if action == PowerAction.START:
            if state == "paused":
                api.unpause(cid)
            elif not running:
                api.start(cid)
        elif action == PowerAction.HARD_OFF:
            if running:
                api.kill(cid)
        elif action == PowerAction.STOP:
            if running:
                api.stop(cid, timeout=conn.opts.stop_timeout)
        elif action == PowerAction.RESET:
            api.restart(cid, timeout=conn.opts.stop_timeout)
        elif action == PowerAction.PAUSE:
            if state in ("running", "restarting"):
                api.pause(cid)
            elif state != "paused":
                raise errors.VMOperationFailed(f"{vm_uuid} is {state}: only a running VM can be paused")
        elif action == PowerAction.RESUME:
            if state == "paused":
                api.unpause(cid)
            elif not running:
                raise errors.VMOperationFailed(f"{vm_uuid} is {state}, not paused: start it instead")
        else:
            raise errors.NotSupported(f"power action {action!r} is not supported by the OCInterface engine")
    except docker.errors.APIError as exc:
        if not any(p in explain(exc) for p in _ALREADY):
            raise
    return status(conn, vm_uuid, sample=False)
