#!/usr/bin/env python3
"""LXC over SSH: listing a host's containers through our server vs. the same command by hand.

Starts an sshd of its own on a loopback port (``idcs_lxc.testing.Sshd``), makes N containers
(default 100, busybox template, started, on lxcbr0) in a private lxcpath, adds the host
``ssh://root@127.0.0.1:<port>`` to our server and imports them with a scan. Then, interleaved:

- ``GET /api/client/detail/<hs>`` on our server (keep-alive client, JSON decoded);
- the engine's list command (``idcs_lxc.lifecycle.LIST_SCRIPT``: ``lxc-ls -f`` plus each
  config's metadata line) run by hand over one asyncssh connection, output parsed.

It also counts the remote commands one engine ``vm_list`` sends (constant: 1, whatever N).

    .venv/bin/python bench/lxc_vm_list.py              # about 2 minutes with 100 containers
    .venv/bin/python bench/lxc_vm_list.py --vms 20 --samples 10
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Cleanup, OurServer, machine_line
from idcs_lxc import lifecycle, testing
from idcs_lxc.engine import LXCEngine

from idcs_core.types import HostSpec

HOST = "lxcbench"


def make_containers(lxcpath: str, count: int) -> None:
    for i in range(count):
        name = f"{testing.PREFIX}bench-{i:03d}"
        subprocess.run(["lxc-create", "-P", lxcpath, "-n", name, "-t", "busybox"], check=True, capture_output=True)
        subprocess.run(["lxc-start", "-P", lxcpath, "-n", name, "-d"], check=True, capture_output=True)


async def by_hand(sshd: testing.Sshd, lxcpath: str, samples: int) -> list[float]:
    """The engine's one list command over one SSH connection, timed per call (parse included)."""
    key = asyncssh.read_private_key(str(sshd.client_key))
    async with asyncssh.connect("127.0.0.1", sshd.port, username="root", client_keys=[key], known_hosts=None,
                                agent_path=None, config=[]) as conn:
        command = shlex.join(["sh", "-c", lifecycle.LIST_SCRIPT, "idcs-list", lxcpath])
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            done = await conn.run(command, check=True, encoding=None)
            out = bytes(done.stdout or b"").decode()
            rows = out.partition(lifecycle.SEP)[0].strip().splitlines()[1:]
            assert rows
            times.append(time.perf_counter() - started)
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vms", type=int, default=100)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    print(machine_line())
    with Cleanup() as cleanup:
        root = Path(tempfile.mkdtemp(prefix="idcs-lxc-bench-"))
        cleanup.callback(shutil.rmtree, root, True)  # registered first: runs last, after the containers went
        lxcpath = str(root / "containers")
        Path(lxcpath).mkdir()
        if testing.ensure_bridge():
            cleanup.callback(testing.stop_bridge)
        sshd = testing.Sshd(root / "sshd").prepare().start()
        cleanup.callback(sshd.stop)
        cleanup.callback(testing.destroy_all, lxcpath)
        started = time.monotonic()
        make_containers(lxcpath, args.vms)
        print(f"{args.vms} containers made and started in {time.monotonic() - started:.1f} s")
        table = f"idcslxcbench_{int(time.time())}"
        cleanup.callback(testing.drop_table, table)
        options = {"lxcpath": lxcpath, "nft_table": table, "ssh_key": str(sshd.client_key),
                   "known_hosts": str(root / "pins.json"), "backup_dir": str(root / "backups"),
                   "disk_dir": str(root / "disks"), "image_dir": str(root / "images")}
        (root / "server").mkdir()
        server = OurServer(root / "server").start(cleanup)
        server.call("POST", "/api/server/create", {"server_name": HOST, "server_type": "Containers",
                                                   "server_addr": sshd.addr, "server_user": "root",
                                                   "server_pass": "", "options": options})
        scan = server.call("POST", f"/api/client/scaner/{HOST}", {})
        print(f"scan imported {scan['added_count']} containers")

        engine = LXCEngine()
        host = HostSpec("bench-direct", "Containers", sshd.addr, "root", "", options)
        transport = engine.sessions.get(host).transport
        engine.vm_list(host=host)
        before = transport.commands
        listed = engine.vm_list(host=host)
        print(f"engine vm_list: {len(listed)} containers with {transport.commands - before} remote command(s)")

        ours: list[float] = []
        hand: list[float] = []
        for _ in range(args.samples):
            started = time.perf_counter()
            vms = server.call("GET", f"/api/client/detail/{HOST}")
            ours.append(time.perf_counter() - started)
            assert len(vms) >= args.vms
            hand += asyncio.run(by_hand(sshd, lxcpath, 1))
        # the by-hand figure without its connection set-up: one connection, many calls
        hand_warm = asyncio.run(by_hand(sshd, lxcpath, args.samples))
        ours_ms, warm_ms = statistics.median(ours) * 1000, statistics.median(hand_warm) * 1000
        print(f"GET /api/client/detail/{HOST}: median {ours_ms:.1f} ms over {len(ours)} calls")
        print(f"same command by hand, one SSH connection: median {warm_ms:.1f} ms "
              f"(with a fresh connection each time: {statistics.median(hand) * 1000:.1f} ms)")
        print(f"ratio ours / by hand: {ours_ms / warm_ms:.2f} x (goal <= 1.3 x)")


if __name__ == "__main__":
    main()
