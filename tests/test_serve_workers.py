"""``idcs serve --workers N`` (issue 19): N processes share the port on PostgreSQL, each answers,
a logout through one is seen by every other at once; on SQLite more than one is refused. Nodes
starting together on one PostgreSQL make one first administrator."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from idcs_core.config import Config
from idcs_core.context import CoreContext
from idcs_core.db.session import upgrade
from idcs_core.plugins import PluginRegistry
from idcs_core.services import users
from idcs_core.testing.databases import drop_postgres_schema, fresh_postgres_url
from idcs_core.testing.server import LiveServer


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    url = fresh_postgres_url()
    srv = LiveServer(tmp_path_factory.mktemp("workers"), database_url=url, subprocess_mode=True,
                     env={"IDCS_LOAD_ENGINES": "none"}, serve_args=["--workers", "2"],
                     ready_timeout=120).start()  # spawned workers import everything anew: slow on a busy machine
    yield srv
    srv.stop()
    drop_postgres_schema(url)


def _worker_pids(srv: LiveServer) -> set[int]:
    assert srv.process is not None
    return {c.pid for c in psutil.Process(srv.process.pid).children(recursive=True)}


def _answering_pids(srv: LiveServer, pids: set[int], connections: int = 24) -> set[int]:
    """Open ``connections`` keep-alive connections at once and see which processes hold them."""
    clients = [httpx.Client(base_url=srv.url, timeout=30) for _ in range(connections)]
    try:
        with ThreadPoolExecutor(connections) as pool:
            assert all(r.status_code == 200 for r in pool.map(lambda c: c.get("/health"), clients))
        holders = set()
        for pid in pids:
            for conn in psutil.Process(pid).net_connections("tcp"):
                if conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == srv.port:
                    holders.add(pid)
        return holders
    finally:
        for c in clients:
            c.close()


def test_two_workers_both_answer_and_see_each_others_logouts(workers: LiveServer) -> None:
    pids = _worker_pids(workers)
    serving = {p for p in pids if any(c.laddr.port == workers.port
                                      for c in psutil.Process(p).net_connections("tcp")
                                      if c.status == psutil.CONN_LISTEN)}
    assert len(serving) == 2, (pids, workers.log_tail())
    holders: set[int] = set()
    deadline = time.monotonic() + 120  # the second may still be starting: it accepts once started
    while holders != serving and time.monotonic() < deadline:
        holders |= _answering_pids(workers, serving)  # the kernel hands each to a process in accept()
    assert holders == serving, "one worker process answered every connection"

    admin = workers.admin()
    token = admin.token
    for _ in range(20):  # remembered by both processes
        assert httpx.get(f"{workers.url}/api/users/current", headers={"Authorization": f"Bearer {token}"},
                         timeout=30).status_code == 200
    admin.post("/logout")
    for _ in range(20):  # new connections, spread over both: refused by each at once
        r = httpx.get(f"{workers.url}/api/users/current", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 401, r.text
    assert workers.log_tail(200).count("another worker of this server does the start-up work") == 1


def test_more_than_one_worker_on_sqlite_is_refused(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "idcs_core.cli", "serve", "--data-dir", str(tmp_path),
                          "--port", "1", "--workers", "2"], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "IDCS_LOAD_ENGINES": "none"})
    assert run.returncode == 2
    assert "--workers needs PostgreSQL" in run.stderr
    assert not (tmp_path / "idcs.db").exists()  # nothing was started or written


async def test_nodes_starting_together_make_one_administrator(tmp_path: Path) -> None:
    url = fresh_postgres_url()
    upgrade(url)
    cores = []
    try:
        for _ in range(3):
            config = Config(data_dir=tmp_path, database_url=url, admin_password="Admin-Secret-123")
            config.create_admin = False
            cores.append(await CoreContext.start(config, PluginRegistry(), serve=False))
        await asyncio.gather(*[users.ensure_first_admin(core) for core in cores])
        assert [u.username for u in await users.list_users(cores[0])] == ["admin"]
    finally:
        for core in cores:
            await core.stop()
        drop_postgres_schema(url)
