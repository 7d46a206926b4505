"""Traffic accounting and bandwidth caps against a real Docker Engine (fixture ``oci_backend``).

Bytes fetched from a container through its NAT forward appear in its ``traffic_used`` within one
sampling period and within 10 % of what was sent; a restart neither resets nor doubles the month;
passing ``flu_num`` suspends the container (setting ``traffic_over_action``) with the
``vm_traffic_over`` event, and ``POST /api/traffic/reset`` starts a new period and resumes it; a
10 Mbit/s cap (``speed_u`` / ``speed_d``) is measured at 10 Mbit/s +- 20 % both ways, also after a
restart of the container.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from idcs_core.testing.server import LiveServer

PERIOD = 1  # traffic_sample_seconds in this test
BIG = 4 * 1024 * 1024  # the file fetched through the NAT forward
GIB = 1024**3


@pytest.fixture(scope="module")
def world(oci_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from idcs_oci.testing import free_port

    folder = Path(tmp_path_factory.mktemp("traffic"))
    srv = LiveServer(folder, subprocess_mode=True, env={"IDCS_LOAD_ENGINES": "OCInterface"}).start()
    admin = srv.admin()
    spec = oci_backend.host_spec()
    hs, vm = f"ops18t{secrets.token_hex(2)}", f"ops18-{secrets.token_hex(3)}"
    admin.post("/api/system/settings", {"traffic_sample_seconds": PERIOD})
    admin.post("/api/server/create", {"server_name": hs, "server_type": "OCInterface", "server_addr": spec.addr,
                                      "server_user": "", "server_pass": "",
                                      "options": spec.options | {"nat_bind": "127.0.0.1"}})
    admin.run_task("POST", f"/api/client/create/{hs}", {"vm_uuid": vm, "os_name": oci_backend.image, "cpu_num": 1,
                                                       "ram_num": 64, "hdd_num": 1})
    docker = oci_backend.client()
    port = free_port()
    admin.post(f"/api/client/natadd/{hs}/{vm}", {"host_port": port, "vm_port": 80, "protocol": "tcp"})
    yield {"server": srv, "admin": admin, "hs": hs, "vm": vm, "docker": docker, "port": port,
           "network": oci_backend.network}
    admin.run_task("DELETE", f"/api/client/delete/{hs}/{vm}")
    admin.delete(f"/api/server/delete/{hs}")
    admin.close()
    srv.stop()


def sh(world: dict[str, Any], script: str, detach: bool = False) -> str:
    result = world["docker"].containers.get(world["vm"]).exec_run(["sh", "-c", script], detach=detach)
    if detach:
        return ""
    assert result.exit_code == 0, (script, result.output)
    return str(result.output.decode())


def fetch(port: int, path: str, address: str = "127.0.0.1") -> tuple[int, float]:
    """GET ``path``: (bytes received, Mbit/s from the first byte to the last)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            conn = socket.create_connection((address, port), timeout=10)
            break
        except OSError:
            assert time.monotonic() < deadline, f"nothing answers on {address}:{port}"
            time.sleep(0.1)
    with conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        total, first = 0, None
        while chunk := conn.recv(65536):
            first = first or time.monotonic()
            total += len(chunk)
        seconds = time.monotonic() - (first or time.monotonic())
    return total, total * 8 / max(seconds, 1e-6) / 1e6


def push(world: dict[str, Any], nbytes: int) -> float:
    """Send ``nbytes`` to a listener in the container (straight to its address); Mbit/s."""
    sh(world, "nc -l -p 5001 > /dev/null; echo done > /tmp/pushed", detach=True)
    address = container_ip(world)
    deadline = time.monotonic() + 10
    while True:
        try:
            conn = socket.create_connection((address, 5001), timeout=10)
            break
        except OSError:
            assert time.monotonic() < deadline, "the listener in the container did not start"
            time.sleep(0.1)
    with conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)  # time the wire, not the buffer
        chunk, sent, started = b"\0" * (1024 * 1024), 0, time.monotonic()
        while sent < nbytes:
            conn.sendall(chunk[: min(len(chunk), nbytes - sent)])
            sent += min(len(chunk), nbytes - sent)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # the listener closes once it has read everything
        seconds = time.monotonic() - started
    return nbytes * 8 / seconds / 1e6


def container_ip(world: dict[str, Any]) -> str:
    attrs = world["docker"].api.inspect_container(world["vm"])
    return str(attrs["NetworkSettings"]["Networks"][world["network"]]["IPAddress"])


def used(world: dict[str, Any]) -> dict[str, Any]:
    return dict(world["admin"].get(f"/api/client/traffic/{world['hs']}/{world['vm']}"))


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.1)
    return result


def test_traffic_counted_once_across_a_restart(world: dict[str, Any]) -> None:
    admin, hs, vm = world["admin"], world["hs"], world["vm"]
    sh(world, f"dd if=/dev/zero of=/www/big bs=1024 count={BIG // 1024} 2>/dev/null")
    wait_for(lambda: used(world)["sampled_at"], 10 * PERIOD, "a first sample")
    before = used(world)["tx_bytes"]

    got, _rate = fetch(world["port"], "/big")
    assert got > BIG
    sent = time.monotonic()
    first = wait_for(lambda: (u := used(world))["tx_bytes"] - before >= BIG and u, PERIOD + 3, "the transfer")
    assert time.monotonic() - sent <= PERIOD + 3
    assert first["tx_bytes"] - before <= got * 1.10, (first, got)
    assert first["rx_bytes"] < 0.10 * got  # what the VM received: the request and the ACKs
    time.sleep(3 * PERIOD)
    settled = used(world)
    assert settled["tx_bytes"] - first["tx_bytes"] < 20_000, "idle rounds added traffic: counted twice"

    admin.post(f"/api/client/powers/{hs}/{vm}", {"action": "S_RESET"})
    sh(world, "test -f /www/big")
    again, _rate = fetch(world["port"], "/big")
    after = wait_for(lambda: (u := used(world))["tx_bytes"] - settled["tx_bytes"] >= BIG and u, PERIOD + 5,
                     "the transfer after the restart")
    moved = after["tx_bytes"] - before
    assert got + again <= moved <= (got + again) * 1.10, ("reset or doubled", moved, got + again)
    time.sleep(3 * PERIOD)
    assert used(world)["tx_bytes"] - after["tx_bytes"] < 20_000, "the restart's counters were counted twice"

    detail = admin.get(f"/api/client/detail/{hs}/{vm}")
    traffic = detail["traffic_used"]
    assert traffic["used_bytes"] == traffic["rx_bytes"] + traffic["tx_bytes"]  # traffic_count "both"
    assert abs(detail["traffic_bytes"] - traffic["used_bytes"]) < 20_000  # the billing dialect's mirror
    metrics = httpx.get(f"{world['server'].url}/metrics", timeout=30)
    series = {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
              for family in text_string_to_metric_families(metrics.text) for smp in family.samples}
    assert series[("idcs_vm_traffic_bytes", (("direction", "tx"), ("host", hs), ("vm", vm)))] >= got + again
    (today,) = traffic["days"]
    assert today["total_bytes"] == traffic["used_bytes"]
    assert traffic["months"][-1]["total_bytes"] == today["total_bytes"]


def test_passing_flu_num_suspends_until_reset(world: dict[str, Any]) -> None:
    admin, hs, vm = world["admin"], world["hs"], world["vm"]
    hook = admin.post("/api/webhooks", {"url": "http://127.0.0.1:9/nobody", "events": ["vm_traffic_over"]})
    admin.post("/api/system/settings", {"traffic_over_action": "suspend"})
    try:
        admin.post("/api/traffic/reset", {"hs_name": hs, "vm_uuid": vm})
        assert used(world)["used_bytes"] == 0
        admin.run_task("PUT", f"/api/client/update/{hs}/{vm}", {"flu_num": 1})
        push(world, GIB + 8 * 1024 * 1024)
        wait_for(lambda: admin.get(f"/api/client/detail/{hs}/{vm}")["status"] == "paused", PERIOD + 10,
                 "the suspension")
        over = used(world)
        assert over["over_action"] == "suspend" and over["used_bytes"] >= over["limit_bytes"] == GIB
        (delivery,) = wait_for(lambda: admin.get(f"/api/webhooks/{hook['id']}/deliveries"), 10, "the event")
        assert delivery["event"] == "vm_traffic_over"
        assert world["docker"].containers.get(vm).status == "paused"

        admin.post("/api/traffic/reset", {"vm_uuid": vm})
        fresh = used(world)
        assert fresh["used_bytes"] == 0 and fresh["over_action"] == ""
        assert admin.get(f"/api/client/detail/{hs}/{vm}")["status"] == "running"
        assert world["docker"].containers.get(vm).status == "running"
    finally:
        admin.post("/api/system/settings", {"traffic_over_action": "none"})
        admin.delete(f"/api/webhooks/{hook['id']}")
        admin.run_task("PUT", f"/api/client/update/{hs}/{vm}", {"flu_num": 0})


def test_a_10_mbit_cap_holds_both_ways_and_after_a_restart(world: dict[str, Any]) -> None:
    admin, hs, vm = world["admin"], world["hs"], world["vm"]
    sh(world, "dd if=/dev/zero of=/www/cap bs=1024 count=2560 2>/dev/null")
    _n, free = fetch(world["port"], "/cap")
    assert free > 30, f"the uncapped path is too slow to prove a cap: {free:.1f} Mbit/s"
    admin.run_task("PUT", f"/api/client/update/{hs}/{vm}", {"speed_u": 10, "speed_d": 10})
    try:
        for _round in ("as set", "after a restart"):
            _n, down = fetch(world["port"], "/cap")  # the VM sends: speed_u
            assert 8 <= down <= 12, f"{_round}: {down:.2f} Mbit/s sent by the VM under a 10 Mbit/s cap; " \
                f"server log:\n{world['server'].log_tail(40)}"
            up = push(world, 2_500_000)  # the VM receives: speed_d
            assert 8 <= up <= 12, f"{_round}: {up:.2f} Mbit/s received by the VM under a 10 Mbit/s cap; " \
                f"server log:\n{world['server'].log_tail(40)}"
            admin.post(f"/api/client/powers/{hs}/{vm}", {"action": "S_RESET"})
            sh(world, "test -f /www/cap")
            # the power action applies the caps again at once, and the sampler when it sees the new epoch;
            # measured once two samples were taken after the restart (a measurement was once seen uncapped
            # for ~0.5 s: re-applying a cap deleted the qdisc before making it again, now changed in place,
            # see plugins/idcs_oci/tests/test_oci_caps.py)
            seen = used(world)["sampled_at"]
            for _sample in range(2):
                seen = wait_for(lambda s=seen: (now := used(world)["sampled_at"]) != s and now, PERIOD + 5, "a sample")
    finally:
        admin.run_task("PUT", f"/api/client/update/{hs}/{vm}", {"speed_u": 0, "speed_d": 0})
    _n, lifted = fetch(world["port"], "/cap")
    assert lifted > 30, f"the cap stayed after it was lifted: {lifted:.1f} Mbit/s"
