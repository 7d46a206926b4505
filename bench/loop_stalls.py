#!/usr/bin/env python3
"""What makes the p99 of a cheap read: the event loop's own stalls, or waiting for a CPU?

Runs our app in this process (uvicorn on the plain asyncio loop, so that every callback can be
timed; fresh SQLite data dir, no hosts), points ``wrk -t1 -c64`` at one authenticated route, and
reports, for the wrk run:

- the loop thread's time on a CPU and its time runnable but waiting for one
  (``/proc/self/task/<tid>/schedstat``: the scheduler's share of the tail);
- every loop callback that held the loop longer than ``--slow`` ms of the thread's own CPU time
  (a stall of ours: the same on an idle machine), grouped by coroutine, and where the loop
  was when a callback had run longer than that in wall-clock time (a watchdog thread's
  sample of the loop thread's stack);
- the garbage collector's pauses per generation.

    .venv/bin/python bench/loop_stalls.py                      # /api/users/current, 15 s
    .venv/bin/python bench/loop_stalls.py --path /api/system/engine --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from pathlib import Path
from typing import Any

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import free_port, loadavg, machine_line


class LoopWatch:
    """Times every ``asyncio`` handle the loop runs; a watchdog samples the loop's stack when
    one runs past ``slow`` seconds of wall-clock time."""

    def __init__(self, slow: float) -> None:
        self.slow = slow
        self.cpu_by_name: collections.Counter[str] = collections.Counter()
        self.count_by_name: collections.Counter[str] = collections.Counter()
        self.worst: list[tuple[float, float, str]] = []
        self.stacks: collections.Counter[str] = collections.Counter()
        self.gc_pauses: list[tuple[int, float]] = []
        self._started: float | None = None
        self._seq = 0
        self._loop_ident: int | None = None
        self.loop_tid: int | None = None
        self._gc_started = 0.0

    def install(self) -> None:
        original = asyncio.events.Handle._run
        watch = self

        def timed(handle: asyncio.Handle) -> None:
            if watch._loop_ident is None:
                watch._loop_ident, watch.loop_tid = threading.get_ident(), threading.get_native_id()
            watch._seq += 1
            watch._started = wall = time.perf_counter()
            cpu = time.thread_time()
            try:
                original(handle)
            finally:
                watch._started = None
                spent = time.thread_time() - cpu
                if spent > watch.slow:
                    name = _handle_name(handle)
                    watch.cpu_by_name[name] += spent
                    watch.count_by_name[name] += 1
                    watch.worst.append((spent, time.perf_counter() - wall, name))

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]  # instrumentation of this process only
        gc.callbacks.append(self._on_gc)
        threading.Thread(target=self._watchdog, name="loop-watchdog", daemon=True).start()

    def reset(self) -> None:
        self.cpu_by_name.clear()
        self.count_by_name.clear()
        self.worst.clear()
        self.stacks.clear()
        self.gc_pauses.clear()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.append((int(info["generation"]), time.perf_counter() - self._gc_started))

    def _watchdog(self) -> None:
        seen = -1
        while True:
            time.sleep(self.slow / 3)
            started, seq = self._started, self._seq
            if started is None or seq == seen or time.perf_counter() - started <= self.slow:
                continue
            seen = seq
            frame = sys._current_frames().get(self._loop_ident or 0)
            if frame is not None:
                lines = [ln for ln in traceback.format_stack(frame) if "/bench/" not in ln.split("\n")[0]]
                self.stacks["".join(lines[-4:])] += 1


def _handle_name(handle: asyncio.Handle) -> str:
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return str(getattr(coro, "__qualname__", coro))
    return repr(callback)[:120]


def schedstat(tid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable and waiting for one) of thread ``tid`` of this process."""
    with open(f"/proc/self/task/{tid}/schedstat") as f:
        run, wait, _slices = f.read().split()
    return int(run) / 1e9, int(wait) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", default="/api/users/current")
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--slow", type=float, default=2.0, help="ms of a callback counted as a stall (default 2)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (bash scripts/bench-tools.sh)", file=sys.stderr)
        return 2
    watch = LoopWatch(args.slow / 1000)
    watch.install()
    password = secrets.token_urlsafe(16)
    os.environ["IDCS_ADMIN_PASSWORD"] = password
    from idcs_core.app import create_app
    from idcs_core.config import Config

    data_dir = Path(tempfile.mkdtemp(prefix="idcs-bench-stalls-"))
    port = free_port()
    app = create_app(Config(data_dir=data_dir, database_url=None))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, loop="asyncio", log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        login = urllib.request.Request(f"http://127.0.0.1:{port}/login", method="POST",
                                       data=json.dumps({"username": "admin", "password": password}).encode(),
                                       headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(login, timeout=30) as r:
            token = json.loads(r.read())["data"]["token"]
        print(machine_line())
        watch.reset()
        assert watch.loop_tid is not None
        before = schedstat(watch.loop_tid)
        out = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
                              "-H", f"Authorization: Bearer {token}", f"http://127.0.0.1:{port}{args.path}"],
                             capture_output=True, text=True, check=True).stdout
        after = schedstat(watch.loop_tid)
        print(out.rstrip())
        print(f"\nloop thread during the run: {after[0] - before[0]:.2f} s on a CPU, "
              f"{after[1] - before[1]:.2f} s runnable but waiting for a CPU (of {args.duration} s); "
              f"load average after: {loadavg()}")
        print(f"callbacks over {args.slow:g} ms of the loop thread's CPU time: "
              f"{sum(watch.count_by_name.values())}")
        for name, n in watch.count_by_name.most_common(10):
            print(f"  {n:5d} x {watch.cpu_by_name[name] * 1000:8.1f} ms in all  {name}")
        for cpu, wall, name in sorted(watch.worst, reverse=True)[:5]:
            print(f"  worst: {cpu * 1000:.1f} ms CPU ({wall * 1000:.1f} ms wall-clock)  {name}")
        pauses: dict[int, list[float]] = collections.defaultdict(list)
        for generation, spent in watch.gc_pauses:
            pauses[generation].append(spent)
        print("GC: " + (", ".join(f"generation {g}: {len(v)} runs, longest {max(v) * 1000:.2f} ms"
                                  for g, v in sorted(pauses.items())) or "no collection"))
        print(f"where the loop was when a callback ran past {args.slow:g} ms wall-clock (most frequent):")
        for stack, n in watch.stacks.most_common(4):
            print(f"--- {n} x\n{stack.rstrip()}")
    finally:
        server.should_exit = True
        thread.join(15)
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
