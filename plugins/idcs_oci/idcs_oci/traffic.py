"""Traffic counters and bandwidth caps of VM containers.

Counters: one ``GET /containers/json`` for the running VMs of the host, then a one-shot
``stats`` per container, asked concurrently (Docker has no batched stats call). ``rx`` / ``tx``
are the sums over the container's interfaces, seen from inside it. The ``epoch`` is the
container's network endpoint ids (Docker makes a new endpoint at every start), or its start time
where the daemon lists none (Podman).

Caps: ``tc`` on the container's host-side veth. What the VM receives leaves the host through
that veth (a ``tbf`` root qdisc caps it); what the VM sends enters the host through it (an
``ingress`` qdisc with a policing filter caps it). The veth is found from the container's PID:
``/proc/<pid>/root/sys/class/net/eth0/iflink`` is the index of its host-side peer. That needs the
Docker host to be this machine (a unix socket) and root; other hosts answer 1006. A restart gives
the container a new veth (and a new epoch), after which the core applies the caps again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from idcs_core import errors
from idcs_core.types import TrafficCounters
from idcs_oci import naming
from idcs_oci.client import Conn

STATS_WORKERS = 8  # concurrent one-shot stats calls per host
SYS_NET = Path("/sys/class/net")


def _stats(conn: Conn, cid: str) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] = conn.api.stats(cid, stream=False, one_shot=True)
        return result
    except Exception:  # stopped or removed meanwhile: it adds nothing this round
        return None


def _epoch(item: dict[str, Any]) -> str:
    networks = ((item.get("NetworkSettings") or {}).get("Networks") or {}).values()
    ids = sorted(str(n.get("EndpointID") or "") for n in networks if n and n.get("EndpointID"))
    return ",".join(ids)


def counters(conn: Conn, vm_uuids: list[str]) -> dict[str, TrafficCounters]:
    """The counters of the running containers among ``vm_uuids``."""
    wanted = set(vm_uuids)
    running = [item for item in conn.api.containers(filters={"label": naming.MANAGED})
               if any(name.lstrip("/") in wanted for name in item.get("Names") or [])]
    if not running:
        return {}
    with ThreadPoolExecutor(max_workers=min(STATS_WORKERS, len(running))) as pool:
        stats = list(pool.map(lambda item: _stats(conn, item["Id"]), running))
    found: dict[str, TrafficCounters] = {}
    for item, data in zip(running, stats, strict=True):
        if not data:
            continue
        name = next(n.lstrip("/") for n in item["Names"] if n.lstrip("/") in wanted)
        nets = data.get("networks") or {}
        rx = sum(int(n.get("rx_bytes") or 0) for k, n in nets.items() if k != "lo")
        tx = sum(int(n.get("tx_bytes") or 0) for k, n in nets.items() if k != "lo")
        epoch = _epoch(item)
        if not epoch:
            epoch = "started:" + str((conn.api.inspect_container(item["Id"]).get("State") or {}).get("StartedAt"))
        found[name] = TrafficCounters(rx_bytes=rx, tx_bytes=tx, epoch=epoch)
    return found


# ------------------------------------------------------------------ caps


def _local(conn: Conn) -> bool:
    addr = conn.host.addr.strip()
    return addr.startswith(("unix://", "/"))


def host_veths(conn: Conn, vm_uuid: str) -> list[str]:
    """The host-side veth of each interface of the VM's running container."""
    if not _local(conn):
        raise errors.NotSupported("bandwidth caps need the Docker host to be this machine (a unix socket)")
    state = conn.api.inspect_container(naming.check_vm_uuid(vm_uuid)).get("State") or {}
    pid = int(state.get("Pid") or 0)
    if not state.get("Running") or pid <= 0:
        raise errors.VMOperationFailed(f"container {vm_uuid} is not running: caps are applied when it runs")
    inner = Path(f"/proc/{pid}/root/sys/class/net")
    peers: set[int] = set()
    for nic in inner.iterdir():
        if nic.name == "lo":
            continue
        try:
            peer, own = int((nic / "iflink").read_text()), int((nic / "ifindex").read_text())
        except (OSError, ValueError):
            continue
        if peer != own:  # a veth: its peer is on the host
            peers.add(peer)
    veths = []
    for dev in SYS_NET.iterdir():
        try:
            if int((dev / "ifindex").read_text()) in peers:
                veths.append(dev.name)
        except (OSError, ValueError):
            continue
    if not veths:
        raise errors.VMOperationFailed(f"no host-side interface of container {vm_uuid} found")
    return veths


def _tc(*args: str, check: bool = True) -> None:
    exe = shutil.which("tc", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if exe is None:
        raise errors.NotSupported("bandwidth caps need tc (Debian package iproute2) on the Docker host")
    done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=15, check=False)
    if check and done.returncode != 0:
        raise errors.VMOperationFailed(f"tc {' '.join(args)}: {done.stderr.strip()}")


def _burst(mbit: int, seconds: float) -> str:
    """Bytes the bucket holds: ``seconds`` of traffic at the rate, at least 16 KiB."""
    return str(max(16 * 1024, int(mbit * 1_000_000 / 8 * seconds)))


def apply_caps(conn: Conn, vm_uuid: str, up_mbit: int, down_mbit: int) -> None:
    """Cap what the VM sends (``up_mbit``) and receives (``down_mbit``); 0 lifts a cap."""
    if up_mbit < 0 or down_mbit < 0:
        raise errors.BadRequest("speed_u and speed_d must not be negative")
    for veth in host_veths(conn, vm_uuid):
        _tc("qdisc", "del", "dev", veth, "root", check=False)
        if down_mbit:
            _tc("qdisc", "replace", "dev", veth, "root", "tbf", "rate", f"{down_mbit}mbit",
                "burst", _burst(down_mbit, 0.02), "latency", "100ms")
        _tc("qdisc", "del", "dev", veth, "ingress", check=False)
        if up_mbit:
            _tc("qdisc", "add", "dev", veth, "handle", "ffff:", "ingress")
            _tc("filter", "add", "dev", veth, "parent", "ffff:", "protocol", "all", "prio", "1", "u32",
                "match", "u32", "0", "0", "police", "rate", f"{up_mbit}mbit", "burst", _burst(up_mbit, 0.1),
                "drop", "flowid", ":1")
