"""Live NAT on real Docker and Podman: forwards come and go while the customer's container keeps
running (same container, same processes, an open TCP connection never drops), UDP is forwarded,
forwards come back after a daemon restart, and containers of earlier releases move over once."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest
from idcs_oci import containers, forwarders, naming, network
from idcs_oci.containers import Blueprint, no_progress
from idcs_oci.engine import OCIEngine
from idcs_oci.testing import DockerBackend, build_busybox_image, free_port

from idcs_core import errors
from idcs_core.types import DiskSpec, HostSpec, NatRule, PowerAction, VMSpec

UPTIME_IMAGE = "idcs-test/uptime:latest"
# The VM's main process records its PID and start second, serves HTTP (a CGI answers with both and
# the seconds it has been up) and a persistent TCP echo service on port 7.
UPTIME_CMD = ["/bin/sh", "-c", """
echo $$ > /tmp/pid; date +%s > /tmp/started; mkdir -p /www/cgi-bin
printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\n\
echo pid=$(cat /tmp/pid) started=$(cat /tmp/started) up=$(( $(date +%%s) - $(cat /tmp/started) ))\\n' \
> /www/cgi-bin/up
chmod +x /www/cgi-bin/up
httpd -p 80 -h /www
nc -ll -p 7 -e cat &
trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done
"""]
UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(b"echo:" + data, peer)
"""


@dataclass
class Live:
    kind: str
    backend: DockerBackend
    engine: OCIEngine
    host: HostSpec
    dc: docker.DockerClient


@pytest.fixture(scope="module", params=["docker", "podman"])
def live(request: pytest.FixtureRequest) -> Iterator[Live]:
    backend: DockerBackend = request.getfixturevalue("oci_backend" if request.param == "docker" else "podman_service")
    dc = backend.client()
    build_busybox_image(dc, UPTIME_IMAGE, cmd=UPTIME_CMD)
    engine = OCIEngine()
    yield Live(request.param, backend, engine, backend.host_spec(f"live-{request.param}"), dc)
    engine.clients.close_all()
    dc.close()


@pytest.fixture
def make(live: Live) -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def create(**overrides: Any) -> str:
        fields: dict[str, Any] = {"vm_uuid": f"n-{uuid.uuid4().hex[:10]}", "os_name": UPTIME_IMAGE,
                                  "cpu_num": 1, "ram_num": 64, "hdd_num": 1, **overrides}
        made.append(fields["vm_uuid"])
        live.engine.vm_create(host=live.host, spec=VMSpec(**fields), progress=lambda *a: None)
        return str(fields["vm_uuid"])

    yield create
    for vm in made:
        with contextlib.suppress(errors.IDCSError):
            live.engine.vm_delete(host=live.host, vm_uuid=vm, progress=lambda *a: None)


def _get(port: int, path: str, within: float) -> str:
    """An HTTP answer through 127.0.0.1:<port>, retried until ``within`` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
                chunks = []
                while chunk := s.recv(4096):
                    chunks.append(chunk)
            text = b"".join(chunks).decode(errors="replace")
            if text.startswith("HTTP/1."):
                return text
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no HTTP answer through port {port} within {within} s")
        time.sleep(0.02)


def _uptime(port: int, within: float = 8.0) -> dict[str, int]:
    text = _get(port, "/cgi-bin/up", within)
    body = re.split(r"\r?\n\r?\n", text, maxsplit=1)[-1]
    assert body.startswith("pid="), text
    return {k: int(v) for k, v in (w.split("=") for w in body.split())}


def _echo(conn: socket.socket, text: bytes) -> None:
    conn.sendall(text)
    got = b""
    while len(got) < len(text):
        chunk = conn.recv(4096)
        assert chunk, "the long-lived connection was closed"
        got += chunk
    assert got == text


def _refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_twenty_live_changes_keep_the_container_and_its_connections(live: Live, make: Callable[..., str]) -> None:
    engine, host, dc = live.engine, live.host, live.dc
    vm = make()
    echo_port, http_port = free_port(), free_port()
    engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(echo_port, 7))
    conn = socket.create_connection(("127.0.0.1", echo_port), timeout=5)
    with conn:
        _echo(conn, b"hello\n")
        engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(http_port, 80))
        before = _uptime(http_port)
        attrs = dc.api.inspect_container(vm)
        images = len(dc.api.images(all=True))
        previous: int | None = None
        for i in range(20):
            port = free_port()
            engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 80))
            answered = time.monotonic()
            assert _uptime(port, within=1.0)["pid"] == before["pid"]
            assert time.monotonic() - answered <= 1.0
            if previous is not None:
                engine.nat_remove(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(previous, 80))
                assert _refused(previous)
            previous = port
            _echo(conn, f"still here {i}\n".encode())
        assert previous is not None
        engine.nat_remove(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(previous, 80))
        assert _refused(previous)
        _echo(conn, b"after twenty changes\n")
    after = _uptime(http_port)
    assert (after["pid"], after["started"]) == (before["pid"], before["started"])
    assert after["up"] >= before["up"]
    now = dc.api.inspect_container(vm)
    assert now["Id"] == attrs["Id"]
    assert (now["State"]["Pid"], now["State"]["StartedAt"]) == (attrs["State"]["Pid"], attrs["State"]["StartedAt"])
    assert network.rules_of(now) == []  # nothing published by the container itself
    assert len(dc.api.images(all=True)) == images
    # The forwarders are the engine's, not VMs: the scan and the count leave them out.
    assert {v.vm_uuid for v in engine.vm_list(host=host)}.isdisjoint(
        {i["Names"][0].lstrip("/") for i in dc.api.containers(all=True) if forwarders.is_forwarder(i)})
    assert len([i for i in dc.api.containers(all=True, filters={"label": f"{naming.NAT_VM}={vm}"})
                if forwarders.is_forwarder(i)]) == 2  # the echo and the HTTP forwards are left
    assert not [i for i in engine.os_images(host=host) if "idcs-nat" in i.file]  # not an OS to offer


def test_udp_datagram_is_forwarded(live: Live, make: Callable[..., str]) -> None:
    engine, host, dc = live.engine, live.host, live.dc
    vm = make()
    pid = dc.api.inspect_container(vm)["State"]["Pid"]
    # A UDP echo server in the container's own network namespace (busybox has no UDP server).
    server = subprocess.Popen(["nsenter", "-t", str(pid), "-n", sys.executable, "-c", UDP_ECHO],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        port = free_port()
        rule = engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 5353, "udp"))
        assert rule.protocol == "udp"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1)
            s.sendto(b"datagram-1", ("127.0.0.1", port))
            data, _ = s.recvfrom(2048)
        assert data == b"echo:datagram-1"
        # TCP and UDP are separate: the same number over TCP is another rule, free to add.
        engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 80, "tcp"))
        assert "hello" in _get(port, "/", 2)
    finally:
        server.kill()
        server.wait()


def test_forwards_come_back_after_a_daemon_restart(live: Live, make: Callable[..., str]) -> None:
    engine, host, dc = live.engine, live.host, live.dc
    vm, other = make(), make()
    rules = {vm: [NatRule(free_port(), 80), NatRule(free_port(), 7)], other: [NatRule(free_port(), 80)]}
    for name, wanted in rules.items():
        for rule in wanted:
            engine.nat_add(progress=no_progress, host=host, vm_uuid=name, rule=rule)
    ids = {name: dc.api.inspect_container(name)["Id"] for name in rules}
    live.backend.daemon.restart()  # type: ignore[attr-defined]
    for name in rules:  # the VMs come back by their restart policy (Podman's never stopped)
        deadline = time.monotonic() + 20
        while dc.api.inspect_container(name)["State"]["Status"] != "running":
            assert time.monotonic() < deadline, f"{name} did not come back after the restart"
            time.sleep(0.1)
    for wanted in rules.values():  # the forwarders are back by their restart policy
        for rule in wanted:
            name = forwarders.container_name(rule.host_port, rule.protocol)
            deadline = time.monotonic() + 20
            while not dc.api.inspect_container(name)["State"]["Running"]:
                assert time.monotonic() < deadline, f"forwarder {name} did not come back after the restart"
                time.sleep(0.1)
    for name, wanted in rules.items():  # what the core does when it reconnects to the host
        engine.nat_sync(host=host, vm_uuid=name, rules=wanted)
    for name, wanted in rules.items():
        assert dc.api.inspect_container(name)["Id"] == ids[name]
        assert "pid=" in _get(wanted[0].host_port, "/cgi-bin/up", 2)
    with socket.create_connection(("127.0.0.1", rules[vm][1].host_port), timeout=5) as conn:
        _echo(conn, b"after the restart\n")


def test_stopped_vm_keeps_its_port_and_forwards_again_when_started(live: Live, make: Callable[..., str]) -> None:
    engine, host = live.engine, live.host
    vm, other = make(), make()
    port = free_port()
    engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 80))
    engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.STOP)
    assert _refused(port)  # nothing forwards to an address the VM no longer has
    with pytest.raises(errors.Conflict, match=vm):
        engine.nat_add(progress=no_progress, host=host, vm_uuid=other, rule=NatRule(port, 80))
    engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.START)
    assert "pid=" in _get(port, "/cgi-bin/up", 2)
    engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.RESET)
    assert "pid=" in _get(port, "/cgi-bin/up", 2)


def test_published_ports_of_an_earlier_release_move_to_forwarders_once(live: Live, make: Callable[..., str],
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    engine, host, dc = live.engine, live.host, live.dc
    vm = make()
    old_port, new_port, next_port = free_port(), free_port(), free_port()
    conn = engine.clients.connect(host)

    def publish(bp: Blueprint) -> Blueprint:  # what the earlier release did for a NAT rule
        bp.set_port_bindings({"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(old_port)}]})
        return bp

    containers.recreate(conn, dc.api.inspect_container(vm), publish)
    legacy_id = dc.api.inspect_container(vm)["Id"]
    assert "pid=" in _get(old_port, "/cgi-bin/up", 5)

    with caplog.at_level(logging.INFO, logger="idcs.oci"):
        engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(new_port, 80))
    said = [r.getMessage() for r in caplog.records if vm in r.getMessage()]
    assert "live forwarding" in said[0] and "restarts once" in said[0]  # said before it happens
    assert any("stopping the container" in m for m in said[1:])
    moved = dc.api.inspect_container(vm)
    assert moved["Id"] != legacy_id  # the one restart
    assert network.rules_of(moved) == []
    assert "pid=" in _get(old_port, "/cgi-bin/up", 2)  # the old rule, now a forwarder
    assert "pid=" in _get(new_port, "/cgi-bin/up", 2)
    engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(next_port, 80))
    assert dc.api.inspect_container(vm)["Id"] == moved["Id"]  # from now on, live
    assert "pid=" in _get(next_port, "/cgi-bin/up", 2)


def test_disk_change_says_it_recreates_before_it_does(live: Live, make: Callable[..., str],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    engine, host = live.engine, live.host
    vm = make()
    port = free_port()
    engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 80))
    with caplog.at_level(logging.INFO, logger="idcs.oci"):
        engine.disk_attach(progress=no_progress, host=host, vm_uuid=vm, disk=DiskSpec("ann", 1))
    said = [r.getMessage() for r in caplog.records if vm in r.getMessage()]
    assert "is recreated to attach disk ann" in said[0] and "one restart" in said[0]
    assert any("stopping the container" in m for m in said[1:])
    assert "pid=" in _get(port, "/cgi-bin/up", 2)  # the forward followed the new container


def test_the_vm_list_brings_forwards_in_step_with_a_vm_changed_behind_the_engine(
        live: Live, make: Callable[..., str]) -> None:
    engine, host, dc = live.engine, live.host, live.dc
    vm = make()
    port = free_port()
    engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 80))
    fwd = forwarders.container_name(port, "tcp")
    dc.api.stop(vm, timeout=5)  # not through the engine: its process ended, say
    assert dc.api.inspect_container(fwd)["State"]["Running"]
    engine.vm_list(host=host)  # what a panel polls
    assert not dc.api.inspect_container(fwd)["State"]["Running"]  # parked: nothing forwarded to a freed address
    assert _refused(port)
    dc.api.start(vm)
    engine.vm_list(host=host)
    assert "pid=" in _get(port, "/cgi-bin/up", 2)
    assert dc.api.inspect_container(fwd)["Config"]["Labels"][naming.NAT_TARGET] == \
        network.ip_list(engine.clients.connect(host), vm)[0].address
