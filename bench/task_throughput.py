"""Task throughput: VM creates per minute on the example engine (ExampleLab/FakeCloud, 0.2 s per create
in the fake back end), through the API and the task queue.

Configurations, each on a fresh database:
- ``in-process``: one ``idcs serve`` on SQLite (tasks run in the server process, as before);
- ``1 worker`` / ``2 workers``: one ``idcs serve --no-worker`` on PostgreSQL queues the creates,
  one or two ``idcs worker`` processes (concurrency 4 each, the default) run them; and one worker
  with concurrency 8 (as many slots as two workers).

For each: ``N`` creates (``?wait=0``) sent by 4 client threads, then every task waited for; the
figure is N divided by the time from the first request to the last task's end. Run:
``python3 bench/task_throughput.py [N]`` (needs the local PostgreSQL; stops what it starts).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, Cleanup, OurServer, machine_line, stop_process

from idcs_core.testing.databases import drop_postgres_schema, fresh_postgres_url

ADDR = "fake://bench"
CLIENTS = 4
CONCURRENCY = 4


def _worker(cleanup: Cleanup, data: Path, url: str, name: str, concurrency: int) -> subprocess.Popen[bytes]:
    env = os.environ | {"BENCH_FAKE_ADDR": ADDR}
    log = open(data / f"{name}.log", "ab")  # closed with the process
    proc = subprocess.Popen([sys.executable, str(BENCH_DIR / "_queue_node.py"), "worker", "--database-url", url,
                             "--data-dir", str(data), "--name", name, "--concurrency", str(concurrency),
                             "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    cleanup.callback(stop_process, proc)
    return proc


def _run(label: str, workers: int, n: int, concurrency: int = CONCURRENCY) -> tuple[str, float, float]:
    with Cleanup() as cleanup:
        data = cleanup.tempdir("bench-queue-")
        url = "" if workers == 0 else fresh_postgres_url()
        if url:
            cleanup.callback(drop_postgres_schema, url)
        env = {"BENCH_FAKE_ADDR": ADDR} | ({"IDCS_DATABASE_URL": url, "BENCH_NO_WORKER": "1"} if url else {})
        api = OurServer(data, env=env, entry=[str(BENCH_DIR / "_queue_node.py")]).start(cleanup)
        procs = [_worker(cleanup, data, url, f"w{i + 1}", concurrency) for i in range(workers)]
        api.call("POST", "/api/server/create", {"server_name": "b", "server_type": "ExampleLab",
                                                "server_addr": ADDR, "server_user": "admin", "server_pass": "secret"})
        deadline = time.monotonic() + 60
        while workers and api.call("GET", "/api/system/stats")["cluster"]["queue"]["workers"] < workers:
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "workers did not start"
            time.sleep(0.2)
        spec = {"os_name": "fakeos-1.0", "cpu_num": 1, "ram_num": 256, "hdd_num": 1}
        for i in range(2):  # warm-up
            api.call("POST", "/api/client/create/b?wait=60", {"vm_uuid": f"warm{i}", **spec})
        ids: list[str] = []
        lock = threading.Lock()

        def client(k: int) -> None:
            for i in range(k, n, CLIENTS):
                tid = api.call("POST", "/api/client/create/b?wait=0", {"vm_uuid": f"vm{i}", **spec})["task_id"]
                with lock:
                    ids.append(tid)

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent = time.monotonic() - started
        for tid in ids:
            task = api.call("GET", f"/api/tasks/{tid}?wait=60")
            while task["state"] not in ("success", "failed"):
                task = api.call("GET", f"/api/tasks/{tid}?wait=60")
            assert task["state"] == "success", task
        elapsed = time.monotonic() - started
    return label, n / elapsed * 60, sent


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 120
    print(machine_line())
    rows = [_run("in-process (SQLite, one server; no limit on concurrent tasks)", 0, n),
            _run(f"1 worker x concurrency {CONCURRENCY} (PostgreSQL)", 1, n),
            _run(f"2 workers x concurrency {CONCURRENCY} (PostgreSQL)", 2, n),
            _run(f"1 worker x concurrency {2 * CONCURRENCY} (PostgreSQL)", 1, n, 2 * CONCURRENCY)]
    print(f"\n{n} creates, {CLIENTS} clients\n")
    print("| configuration | creates / minute | all requests answered after |")
    print("|---|---:|---:|")
    for label, per_minute, sent in rows:
        print(f"| {label} | {per_minute:,.0f} | {sent:.1f} s |")


if __name__ == "__main__":
    main()
