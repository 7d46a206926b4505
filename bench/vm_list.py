#!/usr/bin/env python3
"""Goal 3: listing a host's VMs takes at most 1.3 times the engine's own API call.

A private dockerd (``idcs_oci.testing``: busybox image made by ``docker import``, test
network) gets N containers (default 100, started), made directly with the Docker SDK and
recorded by our server with ``POST /api/client/scaner/<hs>``. Then, interleaved, it times:

- ``GET /api/client/detail/<hs>`` on our server (keep-alive HTTP client, JSON decoded);
- ``APIClient.containers(all=True)``: the one Docker call the OCInterface engine makes
  for a VM list (``GET /containers/json?all=1``), JSON decoded by the SDK;
- ``DockerClient.containers.list(all=True)``: the SDK's high-level list, which inspects
  every container after listing them (N+1 calls; fewer samples of it are taken).

The server runs with ``IDCS_TRACE_HOOKS=1``, so the time of the engine hook inside the
server is known too. When the ratio to the engine's own call is above 1.3 and py-spy is
found (on PATH or ``/tmp/bench-tools/bin``; ``--install-py-spy`` puts it there in a
separate virtualenv), the server is profiled during more list calls and the busiest
functions are printed.

    python3 bench/vm_list.py                  # about 2 minutes
    python3 bench/vm_list.py --vms 20 --samples 10 --created   # quicker, containers not started
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Cleanup, OurServer, machine_line, private_dockerd

HOST = "bench"
PY_SPY_VENV = Path("/tmp/bench-tools")


def py_spy(install: bool) -> str | None:
    found = shutil.which("py-spy") or (str(PY_SPY_VENV / "bin" / "py-spy")
                                        if (PY_SPY_VENV / "bin" / "py-spy").exists() else None)
    if found or not install:
        return found
    subprocess.run([sys.executable, "-m", "venv", str(PY_SPY_VENV)], check=True)
    subprocess.run([str(PY_SPY_VENV / "bin" / "pip"), "install", "-q", "py-spy"], check=True)
    return str(PY_SPY_VENV / "bin" / "py-spy")


class Api:
    """A keep-alive HTTP/1.1 client for one server on 127.0.0.1."""

    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.token = token

    def get(self, path: str) -> object:
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
        resp = self.conn.getresponse()
        body = json.loads(resp.read())
        if resp.status != 200 or body.get("code") != 200:
            raise RuntimeError(f"GET {path}: HTTP {resp.status}: {str(body)[:300]}")
        return body["data"]

    def close(self) -> None:
        self.conn.close()


def make_containers(dc: object, count: int, start: bool) -> None:
    from idcs_oci.testing import TEST_IMAGE, TEST_NETWORK

    def one(i: int) -> None:
        c = dc.containers.create(TEST_IMAGE, name=f"benchvm{i:04d}", init=True, network=TEST_NETWORK,  # type: ignore[attr-defined]
                                 labels={"bench": "vm_list"}, stop_signal="SIGTERM")
        if start:
            c.start()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(count)))


def timeit(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


IDLE_LEAVES = (
    "Runner.run (asyncio/runners.py",  # uvloop waiting in epoll (its C frames are not shown)
    "_worker (concurrent/futures/thread.py:81)",  # an engine pool thread waiting for work
    "_connection_worker_thread (aiosqlite/core.py",  # an aiosqlite thread waiting for work
)


def summarize_profile(raw: Path, top: int = 30) -> str:
    """Busy samples per thread, and per function of the event-loop thread, from py-spy's raw output
    (stacks whose innermost frame is a thread waiting for work are left out)."""
    incl: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    by_thread: collections.Counter[str] = collections.Counter()
    main_total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        if frames[-1].startswith(IDLE_LEAVES):
            continue
        thread = re.sub(r"^thread \(\d+\): ", "", frames[0])
        by_thread[re.sub(r"_\d+$", "", thread)] += n
        if thread != "MainThread":
            continue
        main_total += n
        for f in set(frames[1:]):
            incl[f] += n
        self_[frames[-1]] += n
    lines = ["busy samples by thread: " + ", ".join(f"{k} {v}" for k, v in by_thread.most_common(6)),
             f"event-loop thread, inclusive (samples of {main_total}, function):"]
    lines += [f"  {c:6d}  {f}" for f, c in incl.most_common(top)]
    lines.append("event-loop thread, self:")
    lines += [f"  {c:6d}  {f}" for f, c in self_.most_common(15)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=100, help="containers (default 100)")
    parser.add_argument("--created", action="store_true", help="create the containers without starting them")
    parser.add_argument("--samples", type=int, default=40, help="interleaved samples (default 40)")
    parser.add_argument("--sdk-list-samples", type=int, default=5,
                        help="samples of the SDK's containers.list(all=True), which inspects each (default 5)")
    parser.add_argument("--profile", choices=["auto", "always", "never"], default="auto",
                        help="py-spy the server: when the ratio is above 1.3 (auto), always, never")
    parser.add_argument("--phases", action="store_true",
                        help="run the server through _phase_server.py: time DB sessions and the engine call "
                             "inside each list")
    parser.add_argument("--install-py-spy", action="store_true",
                        help=f"pip install py-spy into {PY_SPY_VENV} if it is not found")
    args = parser.parse_args()

    from idcs_oci.testing import TEST_NETWORK, build_busybox_image

    with Cleanup() as cleanup:
        daemon = private_dockerd(cleanup)
        dc = daemon.client()
        cleanup.callback(dc.close)
        dc.networks.create(TEST_NETWORK, driver="bridge")
        build_busybox_image(dc)
        t0 = time.monotonic()
        make_containers(dc, args.vms, start=not args.created)
        made = time.monotonic() - t0
        srv = OurServer(cleanup.tempdir("idcs-bench-vmlist-"), env={"IDCS_TRACE_HOOKS": "1"}, log_level="info")
        if args.phases:
            srv.entry = [str(Path(__file__).resolve().parent / "_phase_server.py")]
        srv.start(cleanup)
        srv.call("POST", "/api/server/create", {"server_name": HOST, "server_type": "OCInterface",
                                                "server_addr": daemon.url, "server_user": "", "server_pass": "",
                                                "options": {"network": TEST_NETWORK}})
        scan = srv.call("POST", f"/api/client/scaner/{HOST}", {})
        api = Api(srv.port, srv.token)
        cleanup.callback(api.close)
        path = f"/api/client/detail/{HOST}"
        listed = api.get(path)
        raw = dc.api.containers(all=True)
        print(f"machine: {machine_line()}")
        print(f"{args.vms} containers ({'created' if args.created else 'running'}) made in {made:.1f} s; "
              f"scan recorded {scan['added_count']}; API lists {len(listed)} VMs "  # type: ignore[arg-type]
              f"({len(json.dumps(listed))} bytes of data), Docker lists {len(raw)} "
              f"({len(json.dumps(raw))} bytes)\n", flush=True)
        for _ in range(3):  # warm both sides
            api.get(path)
            dc.api.containers(all=True)

        log_mark = srv.log.stat().st_size
        t_api: list[float] = []
        t_raw: list[float] = []
        for i in range(args.samples):
            pair = [("api", lambda: api.get(path)), ("raw", lambda: dc.api.containers(all=True))]
            for name, fn in (pair if i % 2 == 0 else pair[::-1]):
                (t_api if name == "api" else t_raw).append(timeit(fn))
        window = srv.log.read_bytes()[log_mark:].decode(errors="replace")
        hook_ms = [float(m) for m in re.findall(r"hook OCInterface\.vm_list\(host=bench\) ([\d.]+) ms", window)]
        phases = [tuple(float(x) for x in m) for m in
                  re.findall(r"PHASE total=([\d.]+) db=([\d.]+) sessions=(\d+) engine=([\d.]+)", window)]
        t_list = [timeit(lambda: dc.containers.list(all=True)) for _ in range(args.sdk_list_samples)]

        api_ms, raw_ms = statistics.median(t_api) * 1000, statistics.median(t_raw) * 1000
        list_ms = statistics.median(t_list) * 1000 if t_list else float("nan")
        hook = statistics.median(hook_ms) if hook_ms else float("nan")
        ratio = api_ms / raw_ms
        print("| call | median ms | min ms | samples |")
        print("|---|---:|---:|---:|")
        print(f"| `GET {path}` (ours, over HTTP) | {api_ms:.1f} | {min(t_api) * 1000:.1f} | {len(t_api)} |")
        print(f"| engine hook vm_list inside the server (IDCS_TRACE_HOOKS) | {hook:.1f} | "
              f"{min(hook_ms) if hook_ms else float('nan'):.1f} | {len(hook_ms)} |")
        print(f"| Docker SDK `api.containers(all=True)` (the engine's call) | {raw_ms:.1f} | "
              f"{min(t_raw) * 1000:.1f} | {len(t_raw)} |")
        if t_list:
            print(f"| Docker SDK `containers.list(all=True)` (list + inspect each) | {list_ms:.1f} | "
                  f"{min(t_list) * 1000:.1f} | {len(t_list)} |")
        print(f"\nratio ours / engine's own call: {ratio:.2f} (goal <= 1.3: {'met' if ratio <= 1.3 else 'NOT met'})")
        if t_list:
            print(f"ratio ours / SDK containers.list(all=True): {api_ms / list_ms:.2f}")
        print(f"time outside the engine hook (DB, HTTP, JSON, thread hop): about {api_ms - hook:.1f} ms; "
              f"inside the hook beyond Docker's own call: about {hook - raw_ms:.1f} ms", flush=True)
        if phases:
            total, db, sessions, engine = (statistics.median(p[i] for p in phases) for i in range(4))
            print(f"inside the service (medians of {len(phases)}): list_vms {total:.1f} ms = DB sessions {db:.1f} ms "
                  f"({sessions:.0f} per list, before the engine call) + engine call {engine:.1f} ms (thread hop "
                  f"included) + the rest {total - db - engine:.1f} ms; outside the service (HTTP, JSON, "
                  f"auth, client): {api_ms - total:.1f} ms", flush=True)

        if args.profile == "always" or (args.profile == "auto" and ratio > 1.3):
            spy = py_spy(args.install_py_spy)
            if not spy:
                print("\nno py-spy found: run with --install-py-spy to profile the server")
            else:
                out = cleanup.tempdir("idcs-bench-prof-") / "server.raw"
                assert srv.proc is not None
                stop = threading.Event()

                def load() -> None:
                    client = Api(srv.port, srv.token)
                    deadline = time.monotonic() + 20
                    with contextlib.suppress(Exception):
                        while not stop.is_set() and time.monotonic() < deadline:
                            client.get(path)
                    client.close()

                side = threading.Thread(target=load, daemon=True)
                side.start()
                subprocess.run([spy, "record", "-p", str(srv.proc.pid), "-d", "8", "-r", "250", "-f", "raw",
                                "-o", str(out), "--threads", "--nonblocking"], capture_output=True, check=False)
                stop.set()
                side.join(timeout=30)
                if out.exists():
                    print(f"\npy-spy of the server during sequential list calls (8 s):\n{summarize_profile(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
