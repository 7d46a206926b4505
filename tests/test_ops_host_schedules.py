"""Per-host backup schedules (TestLab engine, in-process server): each slot backs up every VM on
the host as its own ``backup_scheduled`` task, keeps ``retention`` backups per VM, and a failing
back end fails each VM's task and shows on the schedule."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from testlab import PASSWORD, TestLabEngine

from idcs_core.db.models import BackupSchedule, utcnow
from idcs_core.testing.server import LiveServer

HS = "hschlab"
PATH = f"/api/server/backup/schedule/{HS}"


def in_server(srv: LiveServer, coro_fn: Any) -> Any:
    core = srv._server.config.app.state.core  # type: ignore[union-attr]
    return asyncio.run_coroutine_threadsafe(coro_fn(core), core.ops.webhooks.loop).result(30)


def run_slot(srv: LiveServer, schedule_id: int) -> None:
    async def due_now(core: Any) -> None:
        async with core.db.session() as s:
            await s.execute(update(BackupSchedule).where(BackupSchedule.id == schedule_id)
                            .values(next_run_at=utcnow() - timedelta(seconds=1)))
        await core.ops.scheduler.run_due()

    in_server(srv, due_now)


def runs(admin: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        tasks = [t for t in admin.get("/api/tasks", params={"limit": 1000})
                 if t["kind"] == "backup_scheduled" and t["host_name"] == HS]
        if not any(t["state"] in ("pending", "running") for t in tasks):
            return tasks
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_host_schedule_backs_up_every_vm(server: LiveServer, lab: TestLabEngine, user_factory: Any) -> None:
    admin = server.admin()
    admin.post("/api/server/create", {"server_name": HS, "server_type": "TestLab", "server_addr": "lab://hsch",
                                      "server_user": "root", "server_pass": PASSWORD})
    for vm in ("hv1", "hv2"):
        admin.run_task("POST", f"/api/client/create/{HS}", {"vm_uuid": vm, "os_name": "busybox", "cpu_num": 1,
                                                           "ram_num": 64, "hdd_num": 1})
    for bad in ({"cron": "nope", "retention": 1}, {"cron": "@daily", "retention": 0}):
        assert admin.call("POST", PATH, bad)[0] == 400
    customer = user_factory()
    assert customer.call("POST", PATH, {"cron": "@daily", "retention": 1})[0] == 403
    assert admin.call("POST", "/api/server/backup/schedule/nohost", {"cron": "@daily", "retention": 1}
                      )[1]["code"] == 1001
    sch = admin.post(PATH, {"cron": "@daily", "retention": 1})
    assert (sch["scope"], sch["vm_uuid"], sch["server_name"]) == ("host", None, HS)
    assert admin.get(f"/api/client/backup/schedule/{HS}/hv1") == [], "a host's schedule is not the VM's"

    run_slot(server, sch["id"])
    first = runs(admin)
    assert sorted((t["vm_uuid"], t["state"]) for t in first) == [("hv1", "success"), ("hv2", "success")]
    run_slot(server, sch["id"])
    assert len(runs(admin)) == 4
    for vm in ("hv1", "hv2"):
        (kept,) = admin.get(f"/api/client/backup/detail/{HS}/{vm}")  # retention 1, per VM
        assert kept["description"].startswith("scheduled")
    (listed,) = admin.get(PATH)
    assert listed["last_state"] == "success" and listed["last_error"] == ""

    lab.faults.fail["backup_create"] = "disk full"
    try:
        run_slot(server, sch["id"])
        failed = [t for t in runs(admin) if t["state"] == "failed"]
        assert sorted(t["vm_uuid"] for t in failed) == ["hv1", "hv2"]
        assert all("disk full" in t["message"] for t in failed)
        (listed,) = admin.get(PATH)
        assert listed["last_state"] == "failed" and "disk full" in listed["last_error"]
    finally:
        lab.faults.fail.clear()

    admin.delete(f"{PATH}/{sch['id']}")
    assert admin.call("DELETE", f"{PATH}/{sch['id']}")[0] == 404
    assert admin.get(PATH) == []
    for vm in ("hv1", "hv2"):
        admin.run_task("DELETE", f"/api/client/delete/{HS}/{vm}")
    admin.delete(f"/api/server/delete/{HS}")
    admin.close()
