#!/usr/bin/env python3
"""The QEMU engine's VM list against libvirt's own: N domains (default 50; defined, a few
running) on the real libvirtd of ``idcs_libvirt.testing``, recorded by our server with
``POST /api/client/scaner/<hs>``. Then, interleaved, it times:

- ``GET /api/client/detail/<hs>`` on our server (keep-alive HTTP client, JSON decoded);
- ``conn.getAllDomainStats(state)`` + the network's DHCP leases straight through
  libvirt-python: the bare calls for the list's states and leased addresses;
- the calls the engine's ``vm_list`` makes in the steady state (it keeps each domain's sizes,
  MACs and image in a cache and re-reads them on every status/power/update): the states, the
  active networks, and for the domains' network its XML (the DHCP reservations: a stopped VM's
  address) and its leases;
- the engine's ``vm_list`` hook called in this process (no server, no HTTP);
- ``GET /api/system/engine``: an authenticated read with no engine behind it, the floor of any
  API call (HTTP, auth, envelope, JSON);
- ``conn.getAllDomainStats(state|vcpu|balloon|block)`` + the leases: the same data read fresh
  from libvirt (which then asks every running QEMU through its monitor).

    python3 bench/libvirt_vm_list.py                 # about a minute
    python3 bench/libvirt_vm_list.py --vms 20 --running 2 --samples 20
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import libvirt
from _common import Cleanup, OurServer, machine_line
from idcs_libvirt import domainxml, naming, network, testing
from idcs_libvirt.engine import LibvirtEngine
from idcs_libvirt.lifecycle import ET_volume

from idcs_core.types import HostSpec

HOST = "bench-qemu"
PREFIX = "bench-lv-"
FULL_STATS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_BALLOON
         | libvirt.VIR_DOMAIN_STATS_BLOCK)


def make_domains(conn: libvirt.virConnect, count: int, running: int) -> None:
    pool = conn.storagePoolLookupByName(testing.POOL)
    base = pool.storageVolLookupByName(testing.IMAGE).path()
    kernel = str(testing.POOL_DIR / (testing.IMAGE + naming.KERNEL_SUFFIX))
    initrd = str(testing.POOL_DIR / (testing.IMAGE + naming.INITRD_SUFFIX))
    for i in range(count):
        name = f"{PREFIX}{i:03d}"
        pool.createXML(ET_volume(naming.root_volume(name), 1, (base, "qcow2")), 0)
        dom = conn.defineXML(domainxml.build(domainxml.DomainPlan(
            name=name, cpu_num=1, ram_mb=64, pool=testing.POOL, root_volume=naming.root_volume(name),
            network=testing.NETWORK, mac=network.new_mac(), os_name=testing.IMAGE, kernel=kernel, initrd=initrd)))
        if i < running:
            dom.create()


def remove_domains(conn: libvirt.virConnect) -> None:
    testing.cleanup(conn, PREFIX)


def direct_list(conn: libvirt.virConnect, flags: int = libvirt.VIR_DOMAIN_STATS_STATE) -> int:
    stats = conn.getAllDomainStats(flags, 0)
    conn.networkLookupByName(testing.NETWORK).DHCPLeases()
    return len(stats)


def engine_calls(conn: libvirt.virConnect) -> int:
    """The libvirt calls of one engine ``vm_list`` (steady state), nothing else."""
    stats = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
    for net in conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE):
        if net.name() == testing.NETWORK:
            net.XMLDesc(0)
            net.DHCPLeases()
    return len(stats)


class Api:
    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.token = token

    def get(self, path: str) -> list[dict[str, object]]:
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
        resp = self.conn.getresponse()
        body = json.loads(resp.read())
        if resp.status != 200 or body.get("code") != 200:
            raise RuntimeError(f"GET {path}: HTTP {resp.status}: {str(body)[:300]}")
        return body["data"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vms", type=int, default=50)
    ap.add_argument("--running", type=int, default=5)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--skip-full", action="store_true", help="leave out the fresh-statistics read (~1 s a sample)")
    args = ap.parse_args()
    print(machine_line())
    with Cleanup() as cleanup:
        backend = testing.start_backend(cleanup.tempdir("idcs-bench-libvirt-"))
        cleanup.callback(testing.stop_backend, backend, PREFIX)
        conn = backend.connect()
        remove_domains(conn)
        make_domains(conn, args.vms, args.running)
        cleanup.callback(remove_domains, conn)
        srv = OurServer(cleanup.tempdir("idcs-bench-lvlist-"))
        srv.start(cleanup)
        srv.call("POST", "/api/server/create", {"server_name": HOST, "server_type": "QEMU",
                                                "server_addr": backend.uri, "server_user": "", "server_pass": "",
                                                "options": testing.host_options()})
        scan = srv.call("POST", f"/api/client/scaner/{HOST}", {})
        api = Api(srv.port, srv.token)
        listed = api.get(f"/api/client/detail/{HOST}")
        mine = [v for v in listed if str(v["vm_uuid"]).startswith(PREFIX)]
        assert len(mine) == args.vms, f"the API lists {len(mine)} of {args.vms} domains (scan: {scan['added_count']})"
        assert direct_list(conn) >= args.vms
        engine = LibvirtEngine()
        spec = HostSpec(name=HOST, server_type="QEMU", addr=backend.uri, user="", password="",
                        options=testing.host_options())
        engine.vm_list(spec)  # its connection and facts cache filled, as in the server
        calls: dict[str, Callable[[], object]] = {
            "api": lambda: api.get(f"/api/client/detail/{HOST}"),
            "bare": lambda: direct_list(conn),
            "same": lambda: engine_calls(conn),
            "hook": lambda: engine.vm_list(spec),
            "floor": lambda: api.get("/api/system/engine"),
        }
        if not args.skip_full:
            calls["full"] = lambda: direct_list(conn, FULL_STATS)
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.samples):
            for name, call in calls.items():
                t = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t)
        with contextlib.suppress(Exception):
            api.conn.close()
        med = {name: statistics.median(x) * 1000 for name, x in times.items()}
        p10 = {name: statistics.quantiles(x, n=10)[0] * 1000 for name, x in times.items()}
        o = med["api"]
        print(f"{args.vms} domains ({args.running} running), {args.samples} samples; median (10th percentile) ms:")
        print(f"  GET /api/client/detail/{HOST}:           {o:8.2f} ({p10['api']:.2f})")
        for name, what in (("bare", "libvirt, state + leases (goal <= 1.3x)"),
                           ("same", "libvirt, the engine's calls (state, active networks, XML, leases)"),
                           ("hook", "the engine's vm_list hook, in this process"),
                           ("full", "libvirt, state|vcpu|balloon|block + leases")):
            if name in med:
                print(f"  {what}: {med[name]:8.2f} ({p10[name]:.2f})  ratio {o / med[name]:.2f}x "
                      f"({p10['api'] / p10[name]:.2f}x)")
        print(f"  GET /api/system/engine (HTTP + auth + envelope, no engine): {med['floor']:8.2f} ({p10['floor']:.2f})")

if __name__ == "__main__":
    main()
