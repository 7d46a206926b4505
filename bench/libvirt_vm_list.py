#!/usr/bin/env python3
"""The QEMU engine's VM list against libvirt's own: N domains (default 50; defined, a few
running) on the real libvirtd of ``idcs_libvirt.testing``, recorded by our server with
``POST /api/client/scaner/<hs>``. Then, interleaved, it times:

- ``GET /api/client/detail/<hs>`` on our server (keep-alive HTTP client, JSON decoded);
- ``conn.getAllDomainStats(state)`` + the network's DHCP leases straight through
  libvirt-python: the bare calls for the list's states and leased addresses;
- the calls the engine's ``vm_list`` makes in the steady state (it keeps each domain's sizes,
  MACs and image in a cache and re-reads them on every status/power/update): the states, and
  for the network its look-up, ``isActive``, its XML (the DHCP reservations: a stopped VM's
  address) and its leases;
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import libvirt
from _common import Cleanup, OurServer, machine_line
from idcs_libvirt import domainxml, naming, network, testing
from idcs_libvirt.lifecycle import ET_volume

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
    net = conn.networkLookupByName(testing.NETWORK)
    if net.isActive():
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
        ours: list[float] = []
        theirs: list[float] = []
        full: list[float] = []
        same: list[float] = []
        for _ in range(args.samples):
            t = time.perf_counter()
            api.get(f"/api/client/detail/{HOST}")
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            direct_list(conn)
            theirs.append(time.perf_counter() - t)
            t = time.perf_counter()
            direct_list(conn, FULL_STATS)
            full.append(time.perf_counter() - t)
            t = time.perf_counter()
            engine_calls(conn)
            same.append(time.perf_counter() - t)
        with contextlib.suppress(Exception):
            api.conn.close()
        o, d, f, e = (statistics.median(x) * 1000 for x in (ours, theirs, full, same))
        print(f"{args.vms} domains ({args.running} running), {args.samples} samples, medians:")
        print(f"  GET /api/client/detail/{HOST}: {o:8.2f} ms")
        print(f"  libvirt, state + leases:          {d:8.2f} ms  ratio {o / d:.2f}x (goal <= 1.3x)")
        print(f"  libvirt, the engine's calls (state, network lookup/isActive/XML/leases): {e:8.2f} ms  "
              f"ratio {o / e:.2f}x")
        print(f"  libvirt, state|vcpu|balloon|block + leases: {f:8.2f} ms  ratio {o / f:.2f}x")


if __name__ == "__main__":
    main()
