"""Traffic counters and bandwidth caps of VM containers.

Counters: one ``GET /containers/json`` for the running VMs of the host, then a one-shot
``stats`` per container, asked concurrently (Docker has no batched stats call). ``rx`` / ``tx``
are the sums over the container's interfaces, seen from inside it. The ``epoch`` is the
container's network endpoint ids (Docker makes a new endpoint at every start), or its start time
where the daemon lists none (Podman).

Caps: ``tc`` token-bucket shapers (``tbf``). What the VM receives leaves the host through the
container's host-side veth (shaped there); what it sends leaves the container's own interface
(shaped in its network namespace through ``nsenter``; ingress policing needs kernel modules many
hosts lack). The veth is found from the container's PID: ``/proc/<pid>/root/sys/class/net/<nic>/
iflink`` is the index of its host-side peer. That needs the Docker host to be this machine (a unix
socket) and root; other hosts answer 1006. A restart gives the container a new veth and namespace
(and a new epoch), after which the core applies the caps again.
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


def interfaces(conn: Conn, vm_uuid: str) -> tuple[int, list[tuple[str, str]]]:
    """The running container's PID and, per interface of it, (its name inside, its host-side veth)."""
    if not _local(conn):
        raise errors.NotSupported("bandwidth caps need the Docker host to be this machine (a unix socket)")
    state = conn.api.inspect_container(naming.check_vm_uuid(vm_uuid)).get("State") or {}
    pid = int(state.get("Pid") or 0)
    if not state.get("Running") or pid <= 0:
        raise errors.VMOperationFailed(f"container {vm_uuid} is not running: caps are applied when it runs")
    peers: dict[int, str] = {}
    for nic in Path(f"/proc/{pid}/root/sys/class/net").iterdir():
        try:
            peer, own = int((nic / "iflink").read_text()), int((nic / "ifindex").read_text())
        except (OSError, ValueError):
            continue
        if nic.name != "lo" and peer != own:  # a veth: its peer is on the host
            peers[peer] = nic.name
    pairs = []
    for dev in SYS_NET.iterdir():
        try:
            index = int((dev / "ifindex").read_text())
        except (OSError, ValueError):
            continue
        if index in peers:
            pairs.append((peers[index], dev.name))
    if not pairs:
        raise errors.VMOperationFailed(f"no host-side interface of container {vm_uuid} found")
    return pid, pairs


def _tool(name: str) -> str:
    exe = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin")
    if exe is None:
        raise errors.NotSupported(f"bandwidth caps need {name} (iproute2, util-linux) on the Docker host")
    return exe


def _run(args: list[str], check: bool = True) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=15, check=False)
    if check and done.returncode != 0:
        raise errors.VMOperationFailed(f"{' '.join(args[-12:])}: {done.stderr.strip()}")


def _shape(prefix: list[str], dev: str, mbit: int) -> None:
    """A ``tbf`` root qdisc of ``mbit`` on ``dev`` (what leaves through it), or none for 0.

    ``replace`` changes a cap in place: deleting it first would leave the interface uncapped for a
    moment each time a cap is applied again (after every power action and new epoch)."""
    if not mbit:
        _run([*prefix, "qdisc", "del", "dev", dev, "root"], check=False)
    else:
        burst = str(max(16 * 1024, int(mbit * 1_000_000 / 8 * 0.02)))  # 20 ms at the rate, 16 KiB at least
        _run([*prefix, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{mbit}mbit", "burst", burst,
              "latency", "100ms"])


def apply_caps(conn: Conn, vm_uuid: str, up_mbit: int, down_mbit: int) -> None:
    """Cap what the VM sends (``up_mbit``) and receives (``down_mbit``); 0 lifts a cap.

    Both are token-bucket shapers on what leaves an interface: what the VM receives leaves the
    host through its host-side veth; what it sends leaves its own ``eth0`` (shaped from the host
    in the container's network namespace, where the container itself, without NET_ADMIN, cannot
    undo it)."""
    if up_mbit < 0 or down_mbit < 0:
        raise errors.BadRequest("speed_u and speed_d must not be negative")
    tc = _tool("tc")
    pid, pairs = interfaces(conn, vm_uuid)
    inside = [_tool("nsenter"), "-t", str(pid), "-n", tc]
    for inner, veth in pairs:
        _shape([tc], veth, down_mbit)
        _shape(inside, inner, up_mbit)
