#!/usr/bin/env python3
"""VmwareWork: listing a host's VMs through our API against vmrest's own calls (on the STAND-IN).

Starts the vmrest stand-in (``plugins/idcs_vmware/tests/vmrest_standin``, a test fixture, not a
real Workstation) and clones N VMs straight through it (default 50, powered on: each runs a
busybox httpd), records them with ``POST /api/client/scaner/<hs>``, then times, interleaved:

- ``GET /api/client/detail/<hs>`` on our server (keep-alive HTTP client, JSON decoded);
- the same data straight from vmrest: ``GET /api/vms`` plus every VM's ``GET /api/vms/{id}/power``,
  concurrently on one keep-alive pool (vmrest has no batch power read: the engine does just this);
- ``GET /api/vms`` alone (ids and paths only, no power state).

    .venv/bin/python bench/vmware_vm_list.py              # about 1 minute
    .venv/bin/python bench/vmware_vm_list.py --vms 20 --samples 10
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "plugins" / "idcs_vmware" / "tests"))

from _common import Cleanup, OurServer, machine_line  # noqa: E402
from vm_list import Api  # noqa: E402
from vmrest_standin.launch import MEDIA, TEMPLATE, start  # noqa: E402

HOST = "benchvmw"


async def raw_list(http: httpx.AsyncClient, with_power: bool) -> int:
    vms = (await http.get("/api/vms")).json()
    if with_power:
        answers = await asyncio.gather(*(http.get(f"/api/vms/{vm['id']}/power") for vm in vms))
        assert all(a.status_code == 200 for a in answers)
    return len(vms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=50)
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()

    with Cleanup() as cleanup:
        standin = start()
        cleanup.callback(standin.stop)
        parent = standin.vm_id(TEMPLATE)
        t0 = time.monotonic()
        for i in range(args.vms):
            made = standin.call("POST", "/api/vms", {"name": f"benchvm{i:04d}", "parentId": parent})
            assert made.status_code == 201, made.text
            standin.call("PUT", f"/api/vms/{made.json()['id']}/power", raw="on")
        made_s = time.monotonic() - t0
        srv = OurServer(cleanup.tempdir("idcs-bench-vmware-"), log_level="warning")
        srv.start(cleanup)
        srv.call("POST", "/api/server/create", {"server_name": HOST, "server_type": "VmwareWork",
                                                "server_addr": standin.url, "server_user": standin.user,
                                                "server_pass": standin.password, "options": {}})
        scan = srv.call("POST", f"/api/client/scaner/{HOST}", {})
        api = Api(srv.port, srv.token)
        cleanup.callback(api.close)
        path = f"/api/client/detail/{HOST}"
        listed = api.get(path)
        assert isinstance(listed, list) and all(v["status"] == "running" for v in listed), listed

        loop = asyncio.new_event_loop()
        cleanup.callback(loop.close)
        http = httpx.AsyncClient(base_url=standin.url, auth=(standin.user, standin.password),
                                 headers={"Accept": MEDIA}, limits=httpx.Limits(max_connections=16))
        cleanup.callback(lambda: loop.run_until_complete(http.aclose()))

        def timed(fn: object) -> float:
            started = time.perf_counter()
            fn()  # type: ignore[operator]
            return time.perf_counter() - started

        calls = {
            "api": lambda: api.get(path),
            "same": lambda: loop.run_until_complete(raw_list(http, True)),
            "list": lambda: loop.run_until_complete(raw_list(http, False)),
        }
        for fn in calls.values():  # warm every side
            fn()
        times: dict[str, list[float]] = {name: [] for name in calls}
        order = list(calls)
        for i in range(args.samples):
            for name in order[i % 3:] + order[:i % 3]:
                times[name].append(timed(calls[name]))
        med = {name: statistics.median(t) * 1000 for name, t in times.items()}
        print(f"machine: {machine_line()}")
        print(f"{args.vms} VMs (running) cloned through the stand-in in {made_s:.1f} s; scan recorded "
              f"{scan['added_count']}; API lists {len(listed)}\n")
        print("| call | median ms | min ms | samples |")
        print("|---|---:|---:|---:|")
        print(f"| `GET {path}` (ours, over HTTP) | {med['api']:.1f} | {min(times['api']) * 1000:.1f} | "
              f"{args.samples} |")
        print(f"| vmrest `GET /api/vms` + {args.vms} x `GET /power`, concurrent (same data) | {med['same']:.1f} | "
              f"{min(times['same']) * 1000:.1f} | {args.samples} |")
        print(f"| vmrest `GET /api/vms` alone (no power states) | {med['list']:.1f} | "
              f"{min(times['list']) * 1000:.1f} | {args.samples} |")
        ratio = med["api"] / med["same"]
        verdict = "met" if ratio <= 1.3 else "NOT met"
        print(f"\nratio ours / vmrest with the same data: {ratio:.2f} (goal <= 1.3: {verdict})")
        print(f"ratio ours / GET /api/vms alone: {med['api'] / med['list']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
