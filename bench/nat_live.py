"""Time from ``nat_add`` to the first byte through the new forward, on Docker and Podman.

Starts a private dockerd and a private ``podman system service`` (``idcs_oci.testing``), makes a
VM serving HTTP, then per round: a new host port, ``engine.nat_add``, and a GET through
127.0.0.1:<port> retried until the first byte of the answer arrives. The earlier mechanism
(recreating the container with the port published) is timed beside it for comparison. With Docker
the same is timed through the REST API as well: our ``idcs serve`` on a free loopback port,
``POST /api/client/natadd/<hs>/<vm>`` as admin. Everything started here is stopped by PID at the end.

    .venv/bin/python bench/nat_live.py [--rounds 20] [--old-rounds 5] [--only docker|podman]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import time
import uuid
from collections.abc import Callable

from _common import Cleanup, OurServer, machine_line
from idcs_oci import containers
from idcs_oci.containers import Blueprint
from idcs_oci.engine import OCIEngine
from idcs_oci.testing import DockerBackend, docker_backend, free_port, podman_backend

from idcs_core.types import NatRule, VMSpec


def first_byte(port: int, limit: float = 30.0) -> None:
    """Wait until a GET through 127.0.0.1:<port> gets its first byte back."""
    deadline = time.monotonic() + limit
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                if s.recv(1):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no answer through port {port} within {limit} s")
        time.sleep(0.002)


def timed(action: Callable[[], None], port: int) -> float:
    start = time.perf_counter()
    action()
    first_byte(port)
    return time.perf_counter() - start


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[max(0, round(0.9 * len(ordered)) - 1)]
    return (f"| {name} | {len(samples)} | {statistics.median(samples) * 1000:.0f} ms | {p90 * 1000:.0f} ms | "
            f"{max(samples) * 1000:.0f} ms |")


def run(kind: str, backend: DockerBackend, rounds: int, old_rounds: int) -> list[str]:
    engine = OCIEngine()
    host = backend.host_spec(f"bench-{kind}")
    vm = f"b-{uuid.uuid4().hex[:8]}"
    engine.vm_create(host=host, spec=VMSpec(vm, backend.image, cpu_num=1, ram_num=64, hdd_num=1),
                     progress=lambda *a: None)
    rows = []
    try:
        port = free_port()
        first = timed(lambda: engine.nat_add(host=host, vm_uuid=vm, rule=NatRule(port, 80)), port)
        rows.append(summary(f"{kind}: first forward on the host (imports the forwarder image)", [first]))
        live = []
        for _ in range(rounds):
            port = free_port()
            live.append(timed(lambda p=port: engine.nat_add(host=host, vm_uuid=vm, rule=NatRule(p, 80)), port))
        rows.append(summary(f"{kind}: `nat_add` → first byte (live forwarder)", live))
        old = []
        conn = engine.clients.connect(host)
        for _ in range(old_rounds):
            port = free_port()

            def publish(bp: Blueprint, p: int = port) -> Blueprint:
                bp.set_port_bindings({"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(p)}]})
                return bp

            def recreate(pub: Callable[[Blueprint], Blueprint] = publish) -> None:
                containers.recreate(conn, conn.api.inspect_container(vm), pub)

            old.append(timed(recreate, port))
        rows.append(summary(f"{kind}: earlier mechanism (stop, commit, recreate, start)", old))
    finally:
        with contextlib.suppress(Exception):
            engine.vm_delete(host=host, vm_uuid=vm, progress=lambda *a: None)
        engine.clients.close_all()
    return rows


def run_api(backend: DockerBackend, rounds: int) -> list[str]:
    """``natadd`` through our REST API, as an operator's panel calls it."""
    engine = OCIEngine()
    spec = backend.host_spec("bench-api")
    vm = f"b-{uuid.uuid4().hex[:8]}"
    engine.vm_create(host=spec, spec=VMSpec(vm, backend.image, cpu_num=1, ram_num=64, hdd_num=1),
                     progress=lambda *a: None)
    engine.clients.close_all()
    with Cleanup() as cleanup:
        srv = OurServer(cleanup.tempdir("idcs-bench-nat-")).start(cleanup)
        srv.call("POST", "/api/server/create", {"server_name": "nat", "server_type": "OCInterface",
                                                "server_addr": spec.addr, "server_user": "", "server_pass": "",
                                                "options": spec.options})
        srv.call("POST", "/api/client/scaner/nat", {})
        samples = []
        for i in range(rounds + 1):
            port = free_port()

            def natadd(p: int = port) -> None:
                srv.call("POST", f"/api/client/natadd/nat/{vm}", {"host_port": p, "vm_port": 80, "protocol": "tcp"})

            took = timed(natadd, port)
            if i:  # the first one imports the forwarder image
                samples.append(took)
    return [summary("docker: `POST /api/client/natadd` → first byte (REST API)", samples)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--old-rounds", type=int, default=5)
    parser.add_argument("--only", choices=["docker", "podman"])
    args = parser.parse_args()
    backends: dict[str, Callable[[], contextlib.AbstractContextManager[DockerBackend]]] = {
        "docker": docker_backend, "podman": podman_backend}
    rows = ["| what | rounds | median | p90 | max |", "|---|---:|---:|---:|---:|"]
    for kind, start in backends.items():
        if args.only and kind != args.only:
            continue
        with start() as backend:
            rows += run(kind, backend, args.rounds, args.old_rounds)
            if kind == "docker":
                rows += run_api(backend, args.rounds)
    print(f"machine: {machine_line()}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
