"""Periodic work once per cluster: of two serving cores on one PostgreSQL, one leads (samples traffic,
prunes, sweeps the queue); when it stops, the other takes over; a host's status history gets one
sample per interval however many nodes ask. On SQLite the one server leads.
Also ``idcs cluster status`` and the in-process runner's queue figures on SQLite."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from idcs_core.cli import main
from idcs_core.cluster.leader import RETRY_SECONDS
from idcs_core.config import Config
from idcs_core.context import CoreContext
from idcs_core.db.models import ClusterNode, Host, HostSample
from idcs_core.plugins import PluginRegistry
from idcs_core.testing.databases import database_url, drop_postgres_schema
from idcs_core.types import HostStatus


async def _serving(tmp_path: Path, url: str, name: str) -> CoreContext:
    config = Config(data_dir=tmp_path / "data", database_url=url, admin_password="Leader-pw-1234",
                    node_name=name, run_worker=False)
    return await CoreContext.start(config, PluginRegistry())


async def _until(check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]  # a plain callable
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_two_nodes_one_leader_then_the_other(tmp_path: Path) -> None:
    url = database_url("postgresql", tmp_path)
    a = await _serving(tmp_path, url, "node-a")
    b = await _serving(tmp_path, url, "node-b")
    try:
        assert (a.leader.leads(), b.leader.leads()) == (True, False)
        await _until(lambda: a.ops.traffic.rounds >= 1, 10)
        await asyncio.sleep(0.5)
        assert b.ops.traffic.rounds == 0  # the periodic sampling runs on the leader only
        status = await a.tasks.stats()
        assert status.backend == "procrastinate" and status.waiting == 0
        await a.stop()
        await _until(b.leader.leads, RETRY_SECONDS * 3)
        await _until(lambda: b.ops.traffic.rounds >= 1, 10)
    finally:
        await b.stop()
        drop_postgres_schema(url)


async def test_two_nodes_take_one_status_sample_per_interval(tmp_path: Path) -> None:
    url = database_url("postgresql", tmp_path)
    a = await _serving(tmp_path, url, "node-a")
    b = await _serving(tmp_path, url, "node-b")
    try:
        async with a.db.session() as s:
            s.add(Host(server_name="h1", server_type="TestLab", server_addr="lab://x"))
        async with a.db.session() as s:
            host = (await s.execute(select(Host))).scalar_one()
        status = HostStatus(cpu_usage=10.0, memory_usage=20.0, disk_usage=30.0)
        await asyncio.gather(a.hosts.history.observe(host, status), b.hosts.history.observe(host, status))
        await b.hosts.history.observe(host, status)
        async with a.db.session() as s:
            assert (await s.execute(select(func.count(HostSample.id)))).scalar_one() == 1
    finally:
        await a.stop()
        await b.stop()
        drop_postgres_schema(url)


async def test_sqlite_leads_alone_and_reports_its_queue(tmp_path: Path) -> None:
    core = await _serving(tmp_path, database_url("sqlite", tmp_path), "solo")
    try:
        assert core.leader.leads()
        stats = await core.tasks.stats()
        assert (stats.backend, stats.waiting, stats.workers) == ("in-process", 0, 1)
        # the node's heartbeat does not count as a change of data: the read cache stays valid
        generation = core.db.generation

        async def last_seen() -> object:
            async with core.db.session() as s:
                return (await s.execute(select(ClusterNode.last_seen))).scalar_one()

        first = await last_seen()
        deadline = time.monotonic() + 20
        while await last_seen() == first:
            assert time.monotonic() < deadline, "no heartbeat"
            await asyncio.sleep(0.1)
        assert core.db.generation == generation
    finally:
        await core.stop()


def test_cluster_status_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cluster", "status", "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "nodes: 0 alive of 0" in out and "queue (in-process)" in out, out
    assert main(["cluster", "status", "--json", "--data-dir", str(tmp_path / "data")]) == 0
    assert '"backend": "in-process"' in capsys.readouterr().out
