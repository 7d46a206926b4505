#!/usr/bin/env python3
"""vSphereESXi: listing 500 VMs through our API against pyvmomi's own RetrievePropertiesEx.

Starts the patched vcsim (standalone-ESXi model, ``--vms`` VMs, built and cached by
``idcs_esxi.testing``) and our server (``idcs serve`` as a child process, fresh SQLite),
adds the simulator as a host, imports its VMs with a scan, then times, interleaved:

- ``GET /api/client/detail/<hs>`` (keep-alive HTTP client, JSON decoded): the core calls the
  engine's ``vm_list``, one RetrievePropertiesEx through a container view, and merges the
  result with its records;
- the same RetrievePropertiesEx straight through pyvmomi (a kept session and view, the same
  property paths): the floor any vSphere client pays for these data.

Prints both medians and their ratio (goal: <= 1.3).

    .venv/bin/python bench/esxi_vm_list.py              # about 1 minute
    .venv/bin/python bench/esxi_vm_list.py --vms 100 --samples 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from idcs_esxi import testing
from idcs_esxi.lifecycle import LIST_PATHS
from pyVim.connect import Disconnect
from pyVmomi import vim, vmodl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Cleanup, OurServer, machine_line

HOST = "bench-esxi"
PC = vmodl.query.PropertyCollector


def direct_lister(sim: testing.Vcsim):
    si = testing.service_instance(sim)
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
            PC.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)])],
        propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=LIST_PATHS, all=False)])

    def run() -> int:
        count = 0
        result = content.propertyCollector.RetrievePropertiesEx(specSet=[spec], options=PC.RetrieveOptions())
        while result is not None:
            count += len(result.objects or [])
            if not result.token:
                break
            result = content.propertyCollector.ContinueRetrievePropertiesEx(token=result.token)
        return count

    return run, lambda: Disconnect(si)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=500)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()

    with Cleanup() as cleanup, tempfile.TemporaryDirectory(prefix="bench-esxi-") as tmp:
        sim = testing.start("esx", Path(tmp) / "vcsim", vms=args.vms)
        cleanup.callback(sim.stop)
        (Path(tmp) / "server").mkdir()
        server = OurServer(Path(tmp) / "server").start(cleanup)
        api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=120)
        cleanup.callback(api.close)

        def call(method: str, path: str, body: object = None) -> object:
            resp = api.request(method, path, json=body)
            data = resp.json()
            if data.get("code") != 200:
                raise RuntimeError(f"{method} {path}: {data}")
            return data["data"]

        call("POST", "/api/server/create", {"server_name": HOST, "server_type": "vSphereESXi",
                                            "server_addr": sim.addr, "server_user": sim.user,
                                            "server_pass": sim.password, "options": {"verify_tls": False}})
        scanned = call("POST", f"/api/client/scaner/{HOST}", {})
        print(f"{machine_line()}\nvcsim ESX model, {args.vms} VMs; imported by scan: {scanned['added_count']}")

        direct, close = direct_lister(sim)
        cleanup.callback(close)
        ours: list[float] = []
        floor: list[float] = []
        for _ in range(3):  # warm both paths (sessions, views, caches)
            call("GET", f"/api/client/detail/{HOST}")
            direct()
        for _ in range(args.samples):
            started = time.perf_counter()
            listed = call("GET", f"/api/client/detail/{HOST}")
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            count = direct()
            floor.append(time.perf_counter() - started)
            assert isinstance(listed, list) and len(listed) == count == args.vms, (len(listed), count)
        a, b = statistics.median(ours), statistics.median(floor)
        print(f"GET /api/client/detail/{HOST}: median {a * 1000:.1f} ms (min {min(ours) * 1000:.1f})")
        print(f"pyvmomi RetrievePropertiesEx:   median {b * 1000:.1f} ms (min {min(floor) * 1000:.1f})")
        print(f"ratio {a / b:.2f} (goal <= 1.3)")


if __name__ == "__main__":
    main()
