#!/usr/bin/env python3
"""Goal 2: the host list answers within the per-host timeout, however many hosts are dead.

Two private Docker daemons (``idcs_oci.testing.start_dockerd``, each in its own temp dir):
one stays up and backs the live hosts; the other backs the dead hosts and is frozen with
SIGSTOP (by its PID) once they are added, so its socket still accepts connections but
nothing ever answers: the worst kind of dead host. Our server runs with
``IDCS_HOST_TIMEOUT`` (default 2 s) and hosts of engine ``OCInterface``.

For each number of dead hosts (default 1, 5, 20) it times cold ``GET /api/server/detail``
calls (the short status cache expired, so every host is asked again) and checks that the
live hosts show online and the dead ones offline. Then, with the most dead hosts, it polls
the list for a while (default 45 s, every 0.5 s) while timing a cheap read beside it, to
show whether calls stuck on the frozen daemon pile up in the engine thread pool.

    python3 bench/dead_hosts.py                      # about 2 minutes
    python3 bench/dead_hosts.py --dead 1,10 --live 2 --timeout 2 --poll 20
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Cleanup, OurServer, machine_line, percentile, private_dockerd, request

STATUS_TTL = 2.0  # idcs_core.services.hosts.STATUS_TTL: a host's status is reused this long


def timed_list(srv: OurServer) -> tuple[float, list[dict]]:
    started = time.monotonic()
    hosts = srv.call("GET", "/api/server/detail?format=list", timeout=600)
    return time.monotonic() - started, hosts


def states(hosts: list[dict]) -> tuple[int, int, int, int]:
    """(live online, live offline, dead online, dead offline)."""
    lo = sum(1 for h in hosts if h["server_name"].startswith("live") and h["status"] == "online")
    lf = sum(1 for h in hosts if h["server_name"].startswith("live") and h["status"] != "online")
    do = sum(1 for h in hosts if h["server_name"].startswith("dead") and h["status"] == "online")
    df = sum(1 for h in hosts if h["server_name"].startswith("dead") and h["status"] != "online")
    return lo, lf, do, df


def add_host(srv: OurServer, name: str, addr: str, options: dict) -> None:
    srv.call("POST", "/api/server/create", {"server_name": name, "server_type": "OCInterface",
                                            "server_addr": addr, "server_user": "", "server_pass": "",
                                            "options": options}, timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dead", default="1,5,20", help="numbers of dead hosts, increasing (default 1,5,20)")
    parser.add_argument("--live", type=int, default=2, help="live hosts (default 2)")
    parser.add_argument("--timeout", type=float, default=2.0, help="IDCS_HOST_TIMEOUT in seconds (default 2)")
    parser.add_argument("--cold", type=int, default=3, help="cold list calls per step (default 3)")
    parser.add_argument("--poll", type=float, default=45, help="seconds of polling at the end, 0: none (default 45)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between polls (default 0.5)")
    parser.add_argument("--docker-timeout", type=float, default=None,
                        help="host option 'timeout' (Docker SDK read timeout) of the dead hosts; "
                             "default: the engine's own default (30 s)")
    args = parser.parse_args()
    steps = sorted({int(x) for x in args.dead.split(",") if x.strip()})
    if not steps or steps[0] < 0:
        parser.error("--dead needs non-negative numbers")

    with Cleanup() as cleanup:
        live_d = private_dockerd(cleanup)
        dead_d = private_dockerd(cleanup)
        srv = OurServer(cleanup.tempdir("idcs-bench-dead-"), env={"IDCS_HOST_TIMEOUT": f"{args.timeout:g}"})
        srv.start(cleanup)
        print(f"machine: {machine_line()}")
        print(f"IDCS_HOST_TIMEOUT={args.timeout:g} s, {args.live} live host(s) on dockerd {live_d.pid}, dead hosts "
              f"on dockerd {dead_d.pid} frozen by SIGSTOP; dead hosts' Docker timeout: "
              f"{args.docker_timeout or 'engine default (30 s)'}\n", flush=True)
        for i in range(args.live):
            add_host(srv, f"live{i}", live_d.url, {})
        elapsed, hosts = timed_list(srv)
        print(f"0 dead: list of {len(hosts)} in {elapsed * 1000:.0f} ms (states {states(hosts)})")

        dead_opts = {"timeout": args.docker_timeout} if args.docker_timeout else {}
        summary = []
        added = 0
        for n in steps:
            os.kill(dead_d.pid, signal.SIGCONT)
            time.sleep(0.5)
            while added < n:
                add_host(srv, f"dead{added}", dead_d.url, dead_opts)
                added += 1
            os.kill(dead_d.pid, signal.SIGSTOP)
            times = []
            ok = True
            for _ in range(args.cold):
                time.sleep(STATUS_TTL + 0.5)  # let every cached status expire: a cold fan-out
                elapsed, hosts = timed_list(srv)
                st = states(hosts)
                ok = ok and st == (args.live, 0, 0, n)
                times.append(elapsed)
            worst = max(times)
            verdict = "OK" if ok and worst <= args.timeout + 1 else "FAIL"
            print(f"{n:>3} dead + {args.live} live: cold list {', '.join(f'{t:.2f}' for t in times)} s "
                  f"(max {worst:.2f} s; {n} x timeout would be {n * args.timeout:.0f} s); "
                  f"states {'right' if ok else 'WRONG'}: {verdict}; server threads {srv.threads()}", flush=True)
            summary.append((n, times, ok, verdict))

        if args.poll > 0:
            n = steps[-1]
            print(f"\npolling the list every {args.interval:g} s for {args.poll:g} s with {n} dead hosts, "
                  f"timing GET /api/system/engine every 0.1 s beside it:", flush=True)
            stop = threading.Event()
            cheap: list[float] = []

            def cheap_reads() -> None:
                while not stop.is_set():
                    t0 = time.monotonic()
                    status, _ = request("GET", srv.url + "/api/system/engine", token=srv.token, timeout=30)
                    if status == 200:
                        cheap.append(time.monotonic() - t0)
                    stop.wait(0.1)

            side = threading.Thread(target=cheap_reads, daemon=True)
            side.start()
            polls: list[tuple[float, float, tuple[int, int, int, int], int]] = []
            started = time.monotonic()
            next_report = started
            while time.monotonic() - started < args.poll:
                elapsed, hosts = timed_list(srv)
                polls.append((time.monotonic() - started, elapsed, states(hosts), srv.threads()))
                if time.monotonic() >= next_report:
                    t, e, st, th = polls[-1]
                    print(f"  t={t:5.1f} s  list {e:5.2f} s  live online {st[0]}/{args.live}  "
                          f"dead offline {st[3]}/{n}  server threads {th}", flush=True)
                    next_report += 5
                time.sleep(args.interval)
            stop.set()
            side.join(timeout=35)
            lat = [p[1] for p in polls]
            wrong = [p for p in polls if p[2] != (args.live, 0, 0, n)]
            print(f"  {len(polls)} lists: median {statistics.median(lat):.2f} s, max {max(lat):.2f} s; "
                  f"{len(wrong)} with a wrong state (live offline or dead online); "
                  f"server threads at the end {srv.threads()}")
            if cheap:
                print(f"  cheap read beside it: {len(cheap)} calls, p50 {percentile(cheap, 50) * 1000:.1f} ms, "
                      f"p99 {percentile(cheap, 99) * 1000:.1f} ms, max {max(cheap) * 1000:.1f} ms")
            if wrong:
                first = wrong[0]
                print(f"  first wrong state at t={first[0]:.1f} s: {first[2]} (live on, live off, dead on, dead off)")
        print("\n| dead hosts | live | timeout | cold list times (s) | max | states |")
        print("|---:|---:|---:|---|---:|---|")
        for n, times, ok, verdict in summary:
            print(f"| {n} | {args.live} | {args.timeout:g} s | {', '.join(f'{t:.2f}' for t in times)} | "
                  f"{max(times):.2f} | {'right' if ok else 'wrong'} ({verdict}) |")
        os.kill(dead_d.pid, signal.SIGCONT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
