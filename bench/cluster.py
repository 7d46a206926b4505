#!/usr/bin/env python3
"""Issue 19: cheap authenticated reads through HAProxy (round robin) with 1, 2 and 3 API nodes.

For each size a fresh schema of the local PostgreSQL (``IDCS_TEST_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``) and ``idcs_core.testing.cluster.Cluster``: that
many ``idcs serve --no-worker`` nodes (no hosts, no engines), HAProxy in front (its access log
off). wrk (``-t1 -c64``) hits each route through HAProxy; one node is also hit directly, the
cost of the balancer alone. Clusters are measured one at a time (all on this machine: the nodes,
HAProxy, PostgreSQL and wrk share its cores), alternating round after round; medians printed.

    python3 bench/cluster.py                          # about 4 minutes
    python3 bench/cluster.py --duration 5 --rounds 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import WrkResult, loadavg, machine_line, median_result, wrk

from idcs_core.testing.cluster import Cluster
from idcs_core.testing.databases import drop_postgres_schema, fresh_postgres_url

ROUTES = {"engine": "/api/system/engine", "identity": "/api/users/current", "hosts": "/api/server/detail"}
SIZES = (1, 2, 3)


def _wrk(url: str, token: str, duration: float, connections: int) -> WrkResult:
    """One wrk run; once more if its output could not be read (wrk under a heavy machine load)."""
    try:
        return wrk(url, token, duration, connections, threads=1)
    except (KeyError, RuntimeError) as exc:
        print(f"wrk output unreadable ({exc!r}): once more", flush=True)
        return wrk(url, token, duration, connections, threads=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of each wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    results: dict[tuple[str, str], list[WrkResult]] = {}
    columns = ["1 node direct"] + [f"{n} node{'s' if n > 1 else ''} via HAProxy" for n in SIZES]
    for _round in range(args.rounds):
        for n in SIZES:
            url = fresh_postgres_url()
            with tempfile.TemporaryDirectory(prefix=f"idcs-bench-cl{n}-") as folder:
                cluster = Cluster(Path(folder), url, nodes=n, workers=0, env={"IDCS_LOAD_ENGINES": "none"},
                                  log_requests=False)
                try:
                    cluster.start()
                    admin = cluster.admin()
                    token = str(admin.token)
                    admin.close()
                    targets = {f"{n} node{'s' if n > 1 else ''} via HAProxy": cluster.url}
                    if n == 1:
                        targets["1 node direct"] = cluster.node_url(0)
                    for base in targets.values():  # warm every node's caches
                        for path in ROUTES.values():
                            _wrk(base + path, token, 2, args.connections)
                    for name, path in ROUTES.items():
                        for column, base in targets.items():
                            result = _wrk(base + path, token, args.duration, args.connections)
                            results.setdefault((name, column), []).append(result)
                            print(f"round {_round + 1} {name:<9} {column:<22}: {result.row()}", flush=True)
                finally:
                    cluster.stop()
                    drop_postgres_schema(url)
    print(f"\n{machine_line()}; load average at the end: {loadavg()}")
    print(f"wrk -t1 -c{args.connections} -d{args.duration:g}s, {args.rounds} rounds, medians:\n")
    print("| route | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, path in ROUTES.items():
        cells = []
        for column in columns:
            r = median_result(results[(name, column)])
            cells.append(f"{r.rps:,.0f} rps (p99 {r.p99:.1f} ms)")
        print(f"| `{path}` | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
