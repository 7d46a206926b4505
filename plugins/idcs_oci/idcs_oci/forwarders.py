"""Live NAT: one small forwarder container per rule, on the Docker/Podman host's own network.

A rule ``host_port/proto -> vm_port`` is a container named ``idcs-nat-<proto>-<host_port>``
with ``NetworkMode: host``, running Docker's userland proxy (``docker-proxy``) from the host's
namespace to the VM's address on its bridge. Everything goes through the Docker API, so a remote
host works like a local one, and the customer's container is never touched: adding or removing
a forward is creating or removing a forwarder.

- **One host port, one owner**: the forwarder's name is the host port and protocol, so the
  daemon itself refuses a second forwarder for it (409); a port held by anything else on the host
  makes ``docker-proxy`` fail to bind, which the engine sees before it answers (``Conflict``).
- **Readiness**: ``docker-proxy`` reports on file descriptor 3 ("0" bound, "1" + error); the
  forwarder's shell points that at its log, and the engine answers only once every proxy bound.
- **State lives on the host**: the rule is in the forwarder's labels (VM, ports, protocol, target
  address, bind addresses), so a scan of the host is the full picture after a control-plane restart.
- **Restarts**: ``unless-stopped`` brings forwarders back with the daemon; ``refresh`` re-points
  them when the VM's address changed (start, recreation, ``nat_sync``) and parks them (created,
  not running) while the VM is stopped, so no stale address is ever forwarded to on purpose.
- **Image**: ``idcs-nat/forwarder:<content hash>``, made offline by the engine from files of the
  control-plane machine (``docker-proxy`` with the libraries it links, and a static busybox for
  the shell) and imported through the API once per host (no registry).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import docker.errors

from idcs_core import errors
from idcs_core.enginekit import local_port_holder
from idcs_core.types import NatRule
from idcs_oci import naming
from idcs_oci.client import Conn, is_local_socket
from idcs_oci.errors import explain

log = logging.getLogger("idcs.oci")

IMAGE_REPO = f"{naming.NAT_REPO}/forwarder"
PROXY_PATHS = ("/usr/sbin/docker-proxy", "/usr/bin/docker-proxy", "/usr/libexec/docker/docker-proxy",
               "/usr/local/bin/docker-proxy")
BUSYBOX_PATHS = ("/usr/bin/busybox", "/bin/busybox")
# $1 proto, $2 host port, $3 target address, $4 VM port, then the bind addresses. Each proxy's
# status pipe (fd 3) goes to the log; TERM ends the proxies and the shell at once. A parked
# forwarder (no target) that something starts by hand exits at once instead of forwarding anywhere.
SCRIPT = ('p=$1 hp=$2 t=$3 vp=$4; shift 4; [ -n "$t" ] || exit 64; pids=; '
          'trap \'kill $pids 2>/dev/null; exit 0\' TERM INT; '
          'for a in "$@"; do /docker-proxy -proto "$p" -host-ip "$a" -host-port "$hp" '
          '-container-ip "$t" -container-port "$vp" 3>&1 & pids="$pids $!"; done; wait')
_POLL = 0.01  # seconds between looks at a starting forwarder's log
_LOG_GRACE = 1.0  # seconds a stopped forwarder's log may lag behind its state


def container_name(host_port: int, protocol: str) -> str:
    return f"idcs-nat-{protocol}-{host_port}"


@dataclass(frozen=True)
class Forwarder:
    """A forwarder container as the host lists it."""

    cid: str
    vm_uuid: str
    rule: NatRule
    target: str  # the VM address it forwards to; "" while the VM is stopped (not started)
    bind: tuple[str, ...]
    running: bool

    @classmethod
    def from_summary(cls, item: dict[str, Any]) -> Forwarder:
        labels = item.get("Labels") or {}
        rule = NatRule(int(labels[naming.NAT_HOST_PORT]), int(labels[naming.NAT_VM_PORT]),
                       labels[naming.NAT_PROTOCOL], labels.get(naming.NAT_TARGET, ""))
        return cls(item["Id"], labels.get(naming.NAT_VM, ""), rule, labels.get(naming.NAT_TARGET, ""),
                   tuple(a for a in labels.get(naming.NAT_BIND, "").split(",") if a),
                   item.get("State") == "running")


def of_vm(conn: Conn, vm_uuid: str) -> list[Forwarder]:
    """The VM's forwarders, by host port and protocol."""
    items = conn.api.containers(all=True, filters={"label": f"{naming.NAT_VM}={vm_uuid}"})
    found = [Forwarder.from_summary(i) for i in items if is_forwarder(i)]
    return sorted(found, key=lambda f: (f.rule.host_port, f.rule.protocol))


def count(conn: Conn) -> int:
    """How many forwarder containers the host has (they are not VMs)."""
    return len(conn.api.containers(all=True, filters={"label": f"{naming.NAT_FORWARDER}=1"}))


def is_forwarder(item: dict[str, Any]) -> bool:
    """A forwarder of this engine, with the labels it needs (a stray label alone does not make one)."""
    labels = item.get("Labels") or {}
    return labels.get(naming.NAT_FORWARDER) == "1" and all(
        str(labels.get(key, "")).isdigit() for key in (naming.NAT_HOST_PORT, naming.NAT_VM_PORT)) and \
        labels.get(naming.NAT_PROTOCOL) in ("tcp", "udp")


def _summary_target(item: dict[str, Any]) -> str | None:
    """Where a VM's forwards should go, from its list summary: its first address (IPv4 first) while it
    runs or is paused, "" while it is stopped, None if the summary does not tell."""
    if item.get("State") not in ("running", "paused"):
        return ""
    nets = ((item.get("NetworkSettings") or {}).get("Networks") or {}).values()
    addrs = [ep.get("IPAddress") for ep in nets if ep.get("IPAddress")] + [
        ep.get("GlobalIPv6Address") for ep in nets if ep.get("GlobalIPv6Address")]
    return addrs[0] if addrs else None


def stale_vms(items: list[dict[str, Any]], bind: tuple[str, ...]) -> list[str]:
    """VMs of a host's container list whose forwarders do not match their state and address (the
    container stopped, restarted or moved on its own): the list alone tells, no further call.

    A forwarder created for the VM's address and not started yet is being opened by a change under
    way, perhaps in another process whose VM lock this one cannot see (several nodes, issue 19): it is
    left alone; if its change was cut short, the next ``nat_sync`` settles it."""
    vms = {n.lstrip("/"): i for i in items for n in i.get("Names") or [] if not is_forwarder(i)}
    stale = set()
    for item in items:
        if not is_forwarder(item):
            continue
        fwd = Forwarder.from_summary(item)
        vm = vms.get(fwd.vm_uuid)
        target = _summary_target(vm) if vm is not None else None
        if target and item.get("State") == "created" and fwd.target == target:
            continue  # being opened by a change under way (maybe in another process): not out of step
        if target is not None and (fwd.target != target or fwd.running != bool(target) or fwd.bind != bind):
            stale.add(fwd.vm_uuid)
    return sorted(stale)


# ------------------------------------------------------------------ the image


def _find(paths: tuple[str, ...], name: str) -> str | None:
    return next((p for p in paths if os.path.isfile(p)), None) or shutil.which(name)


def _libraries(binary: str) -> list[str]:
    """The shared libraries (and loader) ``binary`` needs, from ``ldd``; [] for a static one."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False).stdout
    libs = []
    for line in out.splitlines():
        path = line.split("=>")[-1].strip().split(" (")[0].strip()
        if path.startswith("/") and os.path.exists(path):
            libs.append(path)
    return libs


def _add_file(tar: tarfile.TarFile, name: str, source: str) -> None:
    with open(source, "rb") as f:
        data = f.read()
    info = tarfile.TarInfo(name.lstrip("/"))
    info.size, info.mode = len(data), 0o755
    tar.addfile(info, io.BytesIO(data))


def _build_tar() -> bytes:
    proxy = _find(PROXY_PATHS, "docker-proxy")
    busybox = _find(BUSYBOX_PATHS, "busybox")
    if proxy is None or busybox is None:
        raise errors.VMOperationFailed(
            "live NAT needs docker-proxy and a static busybox on the control-plane machine "
            "(Debian packages docker.io and busybox-static) to make the forwarder image")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for d in ("bin", "tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        _add_file(tar, "docker-proxy", proxy)
        _add_file(tar, "bin/busybox", busybox)
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "/bin/busybox"
        tar.addfile(link)
        for lib in _libraries(proxy):
            _add_file(tar, lib, os.path.realpath(lib))
    return buf.getvalue()


_TAR: bytes | None = None
_IMAGE_LOCK = threading.Lock()


def image_ref(conn: Conn) -> str:
    """The forwarder image's id on the host, imported the first time it is needed."""
    global _TAR
    image_id = conn.facts.get("forwarder_image")
    if image_id:
        return str(image_id)
    with _IMAGE_LOCK:
        if _TAR is None:
            _TAR = _build_tar()
        tag = hashlib.sha256(_TAR + SCRIPT.encode()).hexdigest()[:16]
        ref = f"{IMAGE_REPO}:{tag}"
        try:
            image_id = conn.api.inspect_image(ref)["Id"]
        except docker.errors.NotFound:
            image_id = _import(conn, tag)
        conn.facts["forwarder_image"] = image_id
        return str(image_id)


def _import(conn: Conn, tag: str) -> str:
    log.info("importing the NAT forwarder image %s:%s on %s", IMAGE_REPO, tag, conn.host.name)
    answer = conn.slow_api.import_image_from_data(_TAR, repository=IMAGE_REPO, tag=tag)
    image_id = ""
    for line in str(answer).splitlines():
        with contextlib.suppress(ValueError):
            status = json.loads(line)
            image_id = status.get("id") or status.get("status") or image_id
    if not image_id.startswith("sha256:"):
        raise errors.VMOperationFailed(f"importing the NAT forwarder image gave no image id: {answer!r:.200}")
    # Podman's import names the image ":latest" whatever the tag asked: tag it, drop that name.
    conn.api.tag(image_id, IMAGE_REPO, tag)
    with contextlib.suppress(docker.errors.APIError):
        if conn.api.inspect_image(f"{IMAGE_REPO}:latest")["Id"] == image_id:
            conn.api.remove_image(f"{IMAGE_REPO}:latest")
    return image_id


# ------------------------------------------------------------------ one forwarder


def _body(conn: Conn, vm_uuid: str, rule: NatRule, target: str) -> dict[str, Any]:
    bind = conn.opts.nat_bind
    return {
        "Image": image_ref(conn),
        "Cmd": ["/bin/sh", "-c", SCRIPT, "idcs-nat", rule.protocol, str(rule.host_port), target,
                str(rule.vm_port), *bind],
        "Labels": {naming.MANAGED: "1", naming.NAT_FORWARDER: "1", naming.NAT_VM: vm_uuid,
                   naming.NAT_HOST_PORT: str(rule.host_port), naming.NAT_VM_PORT: str(rule.vm_port),
                   naming.NAT_PROTOCOL: rule.protocol, naming.NAT_TARGET: target,
                   naming.NAT_BIND: ",".join(bind)},
        "HostConfig": {"NetworkMode": "host", "RestartPolicy": {"Name": "unless-stopped"},
                       "LogConfig": {"Type": "json-file", "Config": {"max-size": "64k"}}
                       if not conn.is_podman else {}},
    }


def _holder(conn: Conn, name: str) -> str:
    try:
        labels = conn.api.inspect_container(name).get("Config", {}).get("Labels") or {}
    except docker.errors.NotFound:
        return ""
    return labels.get(naming.NAT_VM, "")


def open_forward(conn: Conn, vm_uuid: str, rule: NatRule, target: str) -> None:
    """Create the rule's forwarder; with a ``target`` start it and return once it forwards.

    ``Conflict`` if another VM's forwarder or anything else on the host holds the port (nothing is
    left behind then).
    """
    name = container_name(rule.host_port, rule.protocol)
    try:
        try:
            cid: str = conn.api.create_container_from_config(_body(conn, vm_uuid, rule, target), name=name)["Id"]
        except docker.errors.ImageNotFound:  # removed from the host since this connection learnt its id
            conn.facts.pop("forwarder_image", None)
            cid = conn.api.create_container_from_config(_body(conn, vm_uuid, rule, target), name=name)["Id"]
    except docker.errors.APIError as exc:
        if exc.status_code == 409:
            holder = _holder(conn, name)
            raise errors.Conflict(f"host port {rule.host_port}/{rule.protocol} is already forwarded to "
                                  f"container {holder or '?'}") from None
        raise
    if not target:
        return
    try:
        conn.api.start(cid)
        _wait_bound(conn, cid, rule)
    except BaseException:
        _remove(conn, cid)
        raise


def _wait_bound(conn: Conn, cid: str, rule: NatRule) -> None:
    """Return once every proxy of the forwarder reported "bound"; raise when one reported an error
    or the forwarder stopped (the daemon may mark it exited a moment before its log has the last
    words: a stopped one's log is read again for up to ``_LOG_GRACE`` seconds)."""
    wanted = len(conn.opts.nat_bind)
    deadline = time.monotonic() + conn.opts.timeout
    ending_since: float | None = None
    while True:
        state = conn.api.inspect_container(cid)["State"]
        text = conn.api.logs(cid, stdout=True, stderr=True).decode(errors="replace")
        lines = text.splitlines()
        if "1" in lines:
            detail = text.split("1\n", 1)[-1].strip()
            ending_since = ending_since or time.monotonic()
            if not detail and time.monotonic() - ending_since < _LOG_GRACE:
                time.sleep(_POLL)  # the message has no line end: it reaches the log when the proxy exits
                continue
            if "address already in use" in detail:
                # on a daemon of this machine, name the program that holds it (the toolkit reads /proc)
                holder = local_port_holder(rule.host_port, rule.protocol) if is_local_socket(conn) else None
                by = f" by {holder}" if holder else ""
                raise errors.Conflict(f"host port {rule.host_port}/{rule.protocol} is already in use{by} on host "
                                      f"{conn.host.name} ({detail})")
            raise errors.VMOperationFailed(f"the forwarder of port {rule.host_port}/{rule.protocol} failed: {detail}")
        if lines.count("0") >= wanted:
            return
        if state.get("Status") not in ("running", "created"):
            ending_since = ending_since or time.monotonic()
            if time.monotonic() - ending_since < _LOG_GRACE:
                time.sleep(_POLL)
                continue
            raise errors.VMOperationFailed(f"the forwarder of port {rule.host_port}/{rule.protocol} stopped "
                                           f"(exit code {state.get('ExitCode')}): {text.strip()}")
        if time.monotonic() > deadline:
            raise errors.VMOperationFailed(f"the forwarder of port {rule.host_port}/{rule.protocol} did not bind "
                                           f"within {conn.opts.timeout:g} s")
        time.sleep(_POLL)


def _remove(conn: Conn, cid: str) -> None:
    try:
        conn.api.remove_container(cid, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        log.warning("could not remove NAT forwarder %s on %s: %s", cid[:12], conn.host.name, explain(exc))


def close_forward(conn: Conn, fwd: Forwarder) -> None:
    """Remove a forwarder; the port is free when this returns."""
    try:
        conn.api.remove_container(fwd.cid, force=True)
    except docker.errors.NotFound:
        pass


def is_current(conn: Conn, fwd: Forwarder, target: str) -> bool:
    """The forwarder forwards to ``target`` on the host's ``nat_bind`` ("" target: parked, not running)."""
    return fwd.target == target and fwd.bind == conn.opts.nat_bind and fwd.running == bool(target)


def replace(conn: Conn, fwd: Forwarder, target: str) -> None:
    """Re-make a forwarder for a new target address or bind addresses (the customer's VM is untouched)."""
    close_forward(conn, fwd)
    open_forward(conn, fwd.vm_uuid, NatRule(fwd.rule.host_port, fwd.rule.vm_port, fwd.rule.protocol), target)
