"""How the backup scheduler claims due schedules (TestLab engine, in-process server): a slot runs
once even when two rounds look at it together, a long downtime makes one catch-up run, and a
failed run is visible on the schedule and as a failed task (its ``task_finished`` event)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from testlab import PASSWORD, TestLabEngine

from idcs_core.db.models import BackupSchedule, utcnow
from idcs_core.testing.server import ApiClient, LiveServer


def in_server(srv: LiveServer, coro_fn: Any) -> Any:
    """Run ``coro_fn(core)`` on the server's own event loop (the server runs in a thread here)."""
    core = srv._server.config.app.state.core  # type: ignore[union-attr]
    return asyncio.run_coroutine_threadsafe(coro_fn(core), core.ops.webhooks.loop).result(30)


def scheduled(admin: ApiClient, vm: str) -> list[dict[str, Any]]:
    return [t for t in admin.get("/api/tasks", params={"limit": 1000})
            if t["kind"] == "backup_scheduled" and t["vm_uuid"] == vm]


def settle(admin: ApiClient, vm: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        tasks = scheduled(admin, vm)
        if not any(t["state"] in ("pending", "running") for t in tasks):
            return tasks
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_due_slot_runs_once_and_failures_show(server: LiveServer, lab: TestLabEngine) -> None:
    admin = server.admin()
    admin.post("/api/server/create", {"server_name": "schlab", "server_type": "TestLab", "server_addr": "lab://sch",
                                      "server_user": "root", "server_pass": PASSWORD})
    admin.run_task("POST", "/api/client/create/schlab", {"vm_uuid": "s1", "os_name": "busybox", "cpu_num": 1,
                                                         "ram_num": 64, "hdd_num": 1})
    sch = admin.post("/api/client/backup/schedule/schlab/s1", {"cron": "@daily", "retention": 1})

    async def overdue_then_two_rounds(core: Any) -> None:
        # the server was "down" for three days: many slots missed
        async with core.db.session() as s:
            await s.execute(update(BackupSchedule).where(BackupSchedule.id == sch["id"])
                            .values(next_run_at=utcnow() - timedelta(days=3)))
        await asyncio.gather(core.ops.scheduler.run_due(), core.ops.scheduler.run_due())

    in_server(server, overdue_then_two_rounds)
    tasks = settle(admin, "s1")
    assert len(tasks) == 1 and tasks[0]["state"] == "success", tasks
    (listed,) = admin.get("/api/client/backup/schedule/schlab/s1")
    assert listed["last_state"] == "success" and listed["next_run_at"] > listed["last_run_at"]

    # a failing back end: the run fails as a task and on the schedule; retention kept what exists
    lab.faults.fail["backup_create"] = "disk full"

    async def due_now(core: Any) -> None:
        async with core.db.session() as s:
            await s.execute(update(BackupSchedule).where(BackupSchedule.id == sch["id"])
                            .values(next_run_at=utcnow() - timedelta(seconds=1)))
        await core.ops.scheduler.run_due()

    in_server(server, due_now)
    tasks = settle(admin, "s1")
    assert [t["state"] for t in tasks] == ["failed", "success"]  # newest first
    assert "disk full" in tasks[0]["message"]
    (listed,) = admin.get("/api/client/backup/schedule/schlab/s1")
    assert listed["last_state"] == "failed" and "disk full" in listed["last_error"]
    assert len(admin.get("/api/client/backup/detail/schlab/s1")) == 1, "a failed run leaves no backup record"

    lab.faults.fail.clear()
    admin.run_task("DELETE", "/api/client/delete/schlab/s1")
    admin.delete("/api/server/delete/schlab")
    admin.close()


def test_a_slot_that_finds_the_vm_busy_is_skipped_not_failed(server: LiveServer, lab: TestLabEngine) -> None:
    """Backups slower than the schedule's period: the slot that comes while the previous backup
    still runs is skipped and said on the schedule; no run fails and no two back up at once."""
    admin = server.admin()
    admin.post("/api/server/create", {"server_name": "schbusy", "server_type": "TestLab",
                                      "server_addr": "lab://schbusy", "server_user": "root", "server_pass": PASSWORD})
    admin.run_task("POST", "/api/client/create/schbusy", {"vm_uuid": "s2", "os_name": "busybox", "cpu_num": 1,
                                                          "ram_num": 64, "hdd_num": 1})
    sch = admin.post("/api/client/backup/schedule/schbusy/s2", {"cron": "@daily", "retention": 3})
    lab.faults.delay["backup_create"] = 2.0

    async def two_slots_half_a_second_apart(core: Any) -> str:
        for _ in range(2):
            async with core.db.session() as s:
                await s.execute(update(BackupSchedule).where(BackupSchedule.id == sch["id"])
                                .values(next_run_at=utcnow() - timedelta(seconds=1)))
            await core.ops.scheduler.run_due()
            await asyncio.sleep(0.5)
        async with core.db.session() as s:  # what the second slot said (the first run's end resets it)
            return str((await s.get(BackupSchedule, sch["id"])).last_error)

    try:
        assert in_server(server, two_slots_half_a_second_apart) == "busy, not backed up: s2"
        tasks = settle(admin, "s2")
        assert [t["state"] for t in tasks] == ["success"], tasks
    finally:
        lab.faults.delay.pop("backup_create", None)
    admin.run_task("DELETE", "/api/client/delete/schbusy/s2")
    admin.delete("/api/server/delete/schbusy")
    admin.close()
