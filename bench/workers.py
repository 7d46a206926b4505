#!/usr/bin/env python3
"""Issue 19: cheap authenticated reads with ``idcs serve --workers 2`` against one process.

Starts two ``idcs serve`` on 127.0.0.1, each on its own fresh schema of the local PostgreSQL
(``IDCS_TEST_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``), one with
``--workers 1`` and one with ``--workers 2``; wrk (``-t1 -c64``) hits each route of each,
alternating servers round after round, and prints the medians and the ratio (goal ≥ 1.6x).

    python3 bench/workers.py                         # about 2 minutes
    python3 bench/workers.py --duration 5 --rounds 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import Cleanup, OurServer, WrkResult, loadavg, machine_line, median_result, wrk

from idcs_core.testing.databases import drop_postgres_schema, fresh_postgres_url

ROUTES = {"engine": "/api/system/engine", "identity": "/api/users/current", "hosts": "/api/server/detail"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    results: dict[tuple[str, int], list[WrkResult]] = {}
    with Cleanup() as cleanup:
        servers: dict[int, OurServer] = {}
        for workers in (1, 2):
            url = fresh_postgres_url()
            cleanup.callback(drop_postgres_schema, url)
            servers[workers] = OurServer(cleanup.tempdir(f"idcs-bench-w{workers}-"),
                                         env={"IDCS_DATABASE_URL": url, "IDCS_WORKERS": str(workers),
                                              "IDCS_LOAD_ENGINES": "none"}).start(cleanup)
        for server in servers.values():  # warm every process's caches
            for path in ROUTES.values():
                try:
                    wrk(server.url + path, server.token, 2, args.connections, threads=1)
                except RuntimeError as exc:  # a warm-up run wrk could not summarise: the real runs count
                    print(f"warm-up of {path}: {exc}", file=sys.stderr)
        for _round in range(args.rounds):
            for name, path in ROUTES.items():
                for workers, server in servers.items():
                    result = wrk(server.url + path, server.token, args.duration, args.connections, threads=1)
                    results.setdefault((name, workers), []).append(result)
                    print(f"round {_round + 1} {name:<9} workers={workers}: {result.row()}", flush=True)
    print(f"\n{machine_line()}; load average at the end: {loadavg()}")
    print(f"wrk -t1 -c{args.connections} -d{args.duration:g}s, {args.rounds} rounds, medians:\n")
    print("| route | --workers 1 | --workers 2 | ratio |")
    print("|---|---:|---:|---:|")
    for name, path in ROUTES.items():
        one, two = median_result(results[(name, 1)]), median_result(results[(name, 2)])
        print(f"| `{path}` | {one.rps:,.0f} rps (p99 {one.p99:.1f} ms) | {two.rps:,.0f} rps (p99 {two.p99:.1f} ms) "
              f"| {two.rps / one.rps:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
