"""Traffic counters and bandwidth caps on real LXD and Incus daemons.

The test gives its container a NIC on a bridge of its own (an LXD-managed bridge, no NAT, no DHCP,
removed afterwards) and an address on it, then moves bytes between the host and the container:
``vm_traffic`` reports them from the container's side within 10 %, a restart gives a new epoch,
and ``vm_bandwidth`` at 10 Mbit/s is measured at 10 Mbit/s +- 20 % both ways, then lifted.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from idcs_lxd import testing
from idcs_lxd.client import open_client, run_async
from idcs_lxd.engine import LXDEngine

from idcs_core.types import HostSpec, PowerAction, VMInfo

SUBNETS = {"lxd": "10.218.18", "incus": "10.218.19"}  # one bridge per daemon: both may run at once
BIG = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def bridge(backend: testing.Backend) -> Iterator[str]:
    """An LXD-managed bridge ``ops18<kind>`` with the host at .1 (made and removed here)."""
    client = open_client(str(backend.socket_path))
    name, net = f"ops18{backend.kind[:3]}", SUBNETS[backend.kind]
    if name not in [n.rsplit("/", 1)[-1] for n in client.api.networks.get().json()["metadata"]]:
        client.api.networks.post(json={"name": name, "type": "bridge", "config": {
            "ipv4.address": f"{net}.1/24", "ipv4.nat": "false", "ipv4.dhcp": "false", "ipv6.address": "none"}})
    yield name
    client.api.networks[name].delete()


def give_nic(engine: LXDEngine, host: HostSpec, backend: testing.Backend, vm_uuid: str, bridge: str,
             sh: Any) -> str:
    """Plug ``eth0`` on ``bridge`` into the running container and give it .10; return that address."""
    client = engine.clients.get(host)
    run_async(client, client.api.instances[vm_uuid].patch(json={"devices": {
        "eth0": {"type": "nic", "network": bridge, "name": "eth0"}}}), timeout=60)
    address = f"{SUBNETS[backend.kind]}.10"
    sh(vm_uuid, f"ip link set eth0 up && ip addr add {address}/24 dev eth0 && "
                f"dd if=/dev/zero of=/var/www/big bs=1024 count={BIG // 1024} 2>/dev/null")
    return address


def fetch(address: str, path: str) -> tuple[int, float]:
    """GET ``path`` from the container's httpd: (bytes, Mbit/s first byte to last)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            conn = socket.create_connection((address, 80), timeout=10)
            break
        except OSError:
            assert time.monotonic() < deadline, f"{address}:80 does not answer"
            time.sleep(0.1)
    with conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        total, first = 0, None
        while chunk := conn.recv(65536):
            first = first or time.monotonic()
            total += len(chunk)
    return total, total * 8 / max(time.monotonic() - (first or 0), 1e-6) / 1e6


def push(engine: LXDEngine, host: HostSpec, vm_uuid: str, address: str, nbytes: int) -> float:
    """Send ``nbytes`` to a listener in the container; Mbit/s."""
    from idcs_lxd import guest

    client = engine.clients.get(host)
    guest.run(client, vm_uuid, ["/bin/sh", "-c", "nc -l -p 5001 </dev/null >/dev/null 2>&1 &"])
    deadline = time.monotonic() + 10
    while True:
        try:
            conn = socket.create_connection((address, 5001), timeout=10)
            break
        except OSError:
            assert time.monotonic() < deadline, "the listener did not start"
            time.sleep(0.1)
    with conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        started, sent = time.monotonic(), 0
        while sent < nbytes:
            conn.sendall(b"\0" * min(1024 * 1024, nbytes - sent))
            sent += min(1024 * 1024, nbytes - sent)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)
    return nbytes * 8 / (time.monotonic() - started) / 1e6


def test_counters_restart_and_caps(engine: LXDEngine, host: HostSpec, backend: testing.Backend, vm: VMInfo,
                                   bridge: str, sh: Any) -> None:
    address = give_nic(engine, host, backend, vm.vm_uuid, bridge, sh)
    assert engine.vm_traffic(host=host, vm_uuids=["idcst-not-there"]) == {}
    before = engine.vm_traffic(host=host, vm_uuids=[vm.vm_uuid])[vm.vm_uuid]
    got, free_rate = fetch(address, "/big")
    assert got > BIG
    after = engine.vm_traffic(host=host, vm_uuids=[vm.vm_uuid])[vm.vm_uuid]
    assert got <= after.tx_bytes - before.tx_bytes <= got * 1.10, (before, after, got)  # sent by the container
    assert after.rx_bytes - before.rx_bytes < got * 0.10
    assert after.epoch == before.epoch and after.epoch.startswith("pid:")

    engine.vm_bandwidth(host=host, vm_uuid=vm.vm_uuid, up_mbit=10, down_mbit=10)
    devices = open_client(str(backend.socket_path)).api.instances[vm.vm_uuid].get().json()["metadata"]["devices"]
    assert devices["eth0"]["limits.ingress"] == "10Mbit"
    # limits.egress needs the kernel's act_police; without it the engine shapes the container's own NIC
    assert devices["eth0"].get("limits.egress", "10Mbit") == "10Mbit"
    _n, down = fetch(address, "/big")  # the container sends: speed_u
    assert 8 <= down <= 12, f"{down:.2f} Mbit/s sent by the container under a 10 Mbit/s cap"
    up = push(engine, host, vm.vm_uuid, address, 2_500_000)  # the container receives: speed_d
    assert 8 <= up <= 12, f"{up:.2f} Mbit/s received by the container under a 10 Mbit/s cap"
    engine.vm_bandwidth(host=host, vm_uuid=vm.vm_uuid, up_mbit=10, down_mbit=10)  # again: idempotent
    engine.vm_bandwidth(host=host, vm_uuid=vm.vm_uuid, up_mbit=0, down_mbit=0)
    _n, lifted = fetch(address, "/big")
    assert lifted > 30, f"still capped after the caps were lifted: {lifted:.1f} Mbit/s (free: {free_rate:.1f})"

    engine.vm_power(host=host, vm_uuid=vm.vm_uuid, action=PowerAction.RESET)
    restarted = engine.vm_traffic(host=host, vm_uuids=[vm.vm_uuid])[vm.vm_uuid]
    assert restarted.epoch != after.epoch, "a restart must give the counters a new epoch"
