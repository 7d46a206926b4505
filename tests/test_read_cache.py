"""Cheap reads come from memory until a commit writes something, on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from testlab import PASSWORD

from idcs_core.config import async_url
from idcs_core.db.bus import ChangeBus
from idcs_core.db.cache import ReadCache
from idcs_core.db.models import User
from idcs_core.db.session import Database, upgrade
from idcs_core.testing.databases import database_url, drop_postgres_schema
from idcs_core.testing.server import ApiClient


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    url = database_url(request.param, tmp_path)
    upgrade(url)
    database = Database(async_url(url))
    bus = ChangeBus(database)  # as in a server: on PostgreSQL the cache trusts what the bus lets it
    await bus.start()
    yield database
    await bus.stop()
    await database.dispose()
    if request.param == "postgresql":
        drop_postgres_schema(url)


async def _usernames(db: Database) -> list[str]:
    async with db.session() as s:
        return list((await s.execute(select(User.username).order_by(User.id))).scalars())


async def test_generation_moves_on_writes_only(db: Database) -> None:
    start = db.generation
    await _usernames(db)
    async with db.session() as s:
        await s.execute(text("SELECT 1"))
    assert db.generation == start, "a read-only transaction counted as a write"

    async with db.session() as s:
        s.add(User(username="alice", email="a@example.com", password_hash="x"))
    assert db.generation == start + 1  # ORM insert

    async with db.session() as s:
        await s.execute(update(User).where(User.username == "alice").values(email="b@example.com"))
    assert db.generation == start + 2  # bulk UPDATE statement

    async with db.session() as s:
        await s.execute(text("DELETE FROM users WHERE username = 'nobody'"))
    assert db.generation == start + 3  # a textual statement counts, even when it matched nothing


async def test_rolled_back_write_keeps_the_generation(db: Database) -> None:
    start = db.generation
    with pytest.raises(RuntimeError):
        async with db.session() as s:
            s.add(User(username="bob", email="b@example.com", password_hash="x"))
            await s.flush()
            raise RuntimeError("half-way")
    assert db.generation == start
    assert await _usernames(db) == []


async def test_cache_reloads_after_a_write(db: Database) -> None:
    cache = ReadCache(db)
    loads = 0

    async def load() -> list[str]:
        nonlocal loads
        loads += 1
        return await _usernames(db)

    assert await cache.get("users", load) == []
    assert await cache.get("users", load) == []
    assert loads == 1
    async with db.session() as s:
        s.add(User(username="carol", email="c@example.com", password_hash="x"))
    assert await cache.get("users", load) == ["carol"]
    assert loads == 2


def test_host_list_and_stats_follow_changes(admin: ApiClient, host: str) -> None:
    """Through the API: what the host list and the stats show changes with each write."""
    before = admin.get("/api/system/stats")
    listed = {h["server_name"]: h for h in admin.get("/api/server/detail")}
    assert listed[host]["vms_count"] == 0
    admin.run_task("POST", f"/api/client/create/{host}",
                   {"vm_uuid": "cache1", "os_name": "debian-12", "cpu_num": 1, "ram_num": 64, "hdd_num": 1})
    listed = {h["server_name"]: h for h in admin.get("/api/server/detail")}
    assert listed[host]["vms_count"] == 1
    assert admin.get("/api/system/stats")["vms_count"] == before["vms_count"] + 1
    admin.put(f"/api/server/update/{host}", {"server_area": "cache-area"})
    assert {h["server_name"]: h for h in admin.get("/api/server/detail")}[host]["server_area"] == "cache-area"
    admin.run_task("DELETE", f"/api/client/delete/{host}/cache1")
    assert {h["server_name"]: h for h in admin.get("/api/server/detail")}[host]["vms_count"] == 0
    assert admin.get("/api/system/stats")["vms_count"] == before["vms_count"]


async def test_a_commit_of_another_node_moves_the_generation_and_a_deaf_node_trusts_nothing(tmp_path: Path) -> None:
    """PostgreSQL: a commit through another ``Database`` (another node) is heard at once; a node
    whose NOTIFY connection is down reloads every cached value, and drops every cache once it
    hears again (it may have missed commits)."""
    url = database_url("postgresql", tmp_path)
    upgrade(url)
    here, there = Database(async_url(url)), Database(async_url(url))
    bus = ChangeBus(here)
    await bus.start()
    resets: list[bool] = []
    here.reset_listeners.append(lambda: resets.append(True))
    cache = ReadCache(here)
    loads = 0

    async def load() -> list[str]:
        nonlocal loads
        loads += 1
        return await _usernames(here)

    try:
        assert await cache.get("users", load) == [] and await cache.get("users", load) == []
        assert loads == 1
        async with there.session() as s:
            s.add(User(username="dave", email="d@example.com", password_hash="x"))
        for _ in range(200):  # the notification arrives on the listening connection
            if await cache.get("users", load) == ["dave"]:
                break
            await asyncio.sleep(0.01)
        assert await cache.get("users", load) == ["dave"] and loads == 2
        await bus.stop()  # deaf: nothing cached is used
        await cache.get("users", load)
        await cache.get("users", load)
        assert loads == 4
        resets.clear()
        await bus.start()
        assert resets == [True] and here.listening
    finally:
        await bus.stop()
        await here.dispose()
        await there.dispose()
        drop_postgres_schema(url)

def test_vm_list_follows_its_vms_and_the_hosts_address(admin: ApiClient, host: str) -> None:
    """A host's VM list keeps its rows and the engine's view of the host in memory between
    writes: a new VM, a new host address, and the address back, each show on the next list."""
    path = f"/api/client/detail/{host}"
    assert admin.get(path) == []
    admin.run_task("POST", f"/api/client/create/{host}",
                   {"vm_uuid": "cache2", "os_name": "debian-12", "cpu_num": 1, "ram_num": 64, "hdd_num": 1})
    for _ in range(2):  # the second answer comes from memory, the same
        listed = admin.get(path)
        assert [(v["vm_uuid"], v["status"], v["power_state"]) for v in listed] == [("cache2", "running",
                                                                                   "lab-running")]
    admin.put(f"/api/server/update/{host}", {"server_addr": f"lab://{host}-elsewhere", "server_pass": PASSWORD})
    assert [v["power_state"] for v in admin.get(path)] == ["missing"]  # asked at the new address
    admin.put(f"/api/server/update/{host}", {"server_addr": f"lab://{host}", "server_pass": PASSWORD})
    assert [v["power_state"] for v in admin.get(path)] == ["lab-running"]
    admin.run_task("DELETE", f"/api/client/delete/{host}/cache2")
    assert admin.get(path) == []
