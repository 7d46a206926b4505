"""Recovery of interrupted tasks when the host does not answer at start-up: the task stays running
and its VM busy until the host answers, then it is settled like any other (TestLab engine)."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers import create_vm
from testlab import PASSWORD, TestLabEngine

from idcs_core import context, tasks
from idcs_core.hookspecs import hookimpl
from idcs_core.plugins import PluginRegistry
from idcs_core.testing.server import LiveServer


class Heard:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    @hookimpl
    def vm_created(self, vm: dict[str, Any]) -> None:
        self.events.append(("vm_created", vm["vm_uuid"]))

    @hookimpl
    def task_finished(self, task: dict[str, Any]) -> None:
        self.events.append(("task_finished", task["id"]))


def test_recovery_waits_for_the_host_then_settles(tmp_path: Path, lab: TestLabEngine,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "RECOVERY_GRACE", 0.5, raising=False)
    monkeypatch.setattr(tasks, "RECOVERY_RETRY", (0.2, 0.5), raising=False)
    heard = Heard()
    registry = PluginRegistry()
    assert registry.register_engine("TestLab", lab) is not None
    registry.register_event_plugin("heard", heard)
    addr = f"lab://recover-{time.monotonic_ns()}"
    with LiveServer(tmp_path, plugins=registry) as srv:
        admin = srv.admin()
        admin.post("/api/server/create", {"server_name": "r", "server_type": "TestLab", "server_addr": addr,
                                          "server_user": "u", "server_pass": PASSWORD})
        create_vm(admin, "r", "kept")
        lab.faults.delay["vm_create"] = 6  # the engine makes the VM after the server has stopped (5 s grace)
        started = admin.post("/api/client/create/r", {"vm_uuid": "late", "os_name": "ubuntu-22.04", "cpu_num": 1,
                                                      "ram_num": 256, "hdd_num": 1})
    lab.faults.down.add(addr)  # the host does not answer when the server comes back
    with LiveServer(tmp_path, plugins=registry) as srv:
        admin = srv.admin()
        task = admin.get(f"/api/tasks/{started['task_id']}")
        assert task["state"] == "running" and "waiting for host r" in task["message"], task
        assert admin.get("/api/client/detail/r/late")["status"] == "creating"
        status, body = admin.call("PUT", "/api/client/update/r/late", {"cpu_num": 2})
        assert (status, body["code"]) == (409, 4002), body  # busy until its task is settled
        deadline = time.monotonic() + 10
        while "late" not in lab.hosts[addr].vms:  # the engine makes it meanwhile, in its worker thread
            assert time.monotonic() < deadline, lab.hosts[addr].calls
            time.sleep(0.1)
        lab.faults.down.discard(addr)
        task = admin.wait_task(started["task_id"], 30)
        assert task["state"] == "success" and task["message"].startswith("recovered after a restart"), task
        vm = admin.get("/api/client/detail/r/late")
        assert vm["status"] == "running"
        assert admin.get("/api/users/current")["quota"]["used_vms"] == 2
        log = admin.get("/api/system/logger/detail", params={"limit": 50})
        ends = [e for e in log if e["detail"].startswith(f"task {started['task_id']}:")]
        assert [e["result"] for e in ends] == ["success"]
    assert heard.events.count(("vm_created", "late")) == 1
    assert heard.events.count(("task_finished", started["task_id"])) == 1


def _interrupt(db: Path, kind: str, vm_uuid: str, params: dict[str, Any], vm_status: str | None = None) -> str:
    """Make the database say what a process killed during a ``kind`` task leaves: the task running
    (and the VM in its in-between state)."""
    task_id = str(uuid.uuid4())
    with sqlite3.connect(db) as con:
        now = "2026-12-02 06:00:00.000000"
        con.execute("INSERT INTO tasks (id, kind, host_name, vm_uuid, user_id, state, progress, message, params, "
                    "result, created_at, updated_at) VALUES (?, ?, 'r', ?, 1, 'running', 40, '', ?, '{}', ?, ?)",
                    (task_id, kind, vm_uuid, json.dumps(params), now, now))
        if vm_status:
            con.execute("UPDATE vms SET status = ? WHERE vm_uuid = ?", (vm_status, vm_uuid))
    return task_id


def test_a_half_made_vm_that_cannot_be_deleted_is_kept_as_it_is(tmp_path: Path, lab: TestLabEngine,
                                                                 registry: PluginRegistry) -> None:
    addr = f"lab://half-{time.monotonic_ns()}"
    with LiveServer(tmp_path, plugins=registry) as srv:
        admin = srv.admin()
        admin.post("/api/server/create", {"server_name": "r", "server_type": "TestLab", "server_addr": addr,
                                          "server_user": "u", "server_pass": PASSWORD})
        create_vm(admin, "r", "half")
    with sqlite3.connect(tmp_path / "idcs.db") as con:
        [(vm_id,)] = con.execute("SELECT id FROM vms WHERE vm_uuid = 'half'").fetchall()
    task_id = _interrupt(tmp_path / "idcs.db", "vm_create", "half", {"vm_id": vm_id}, vm_status="creating")
    lab.hosts[addr].vms["half"].status = "stopped"  # made, never started: half made
    lab.faults.fail["vm_delete"] = "the disk is busy"
    with LiveServer(tmp_path, plugins=registry) as srv:
        admin = srv.admin()
        task = admin.get(f"/api/tasks/{task_id}")
        assert task["state"] == "failed" and "could not be deleted" in task["message"], task
        assert admin.get("/api/client/detail/r/half")["status"] == "stopped"  # true, and not in between
        assert "half" in lab.hosts[addr].vms


def test_update_reinstall_and_restore_are_run_again(tmp_path: Path, lab: TestLabEngine,
                                                     registry: PluginRegistry) -> None:
    addr = f"lab://again-{time.monotonic_ns()}"
    with LiveServer(tmp_path, plugins=registry) as srv:
        admin = srv.admin()
        admin.post("/api/server/create", {"server_name": "r", "server_type": "TestLab", "server_addr": addr,
                                          "server_user": "u", "server_pass": PASSWORD})
        for name in ("up", "re", "rs"):
            create_vm(admin, "r", name, cpu_num=1)
        backup = admin.run_task("POST", "/api/client/backup/create/r/rs", {"description": "b"})["result"]
    db = tmp_path / "idcs.db"
    with sqlite3.connect(db) as con:
        ids = dict(con.execute("SELECT vm_uuid, id FROM vms").fetchall())
        con.execute("UPDATE vms SET cpu_num = 2 WHERE vm_uuid = 'up'")  # what update_vm records first
    old = {"cpu_num": 1, "ram_num": 512, "hdd_num": 10, "os_name": "ubuntu-22.04", "vm_name": "up", "config": {}}
    started = {
        "up": _interrupt(db, "vm_update", "up", {"vm_id": ids["up"], "old": old}),
        "re": _interrupt(db, "vm_reinstall", "re", {"vm_id": ids["re"], "previous_os": "ubuntu-22.04"},
                         vm_status="creating"),
        "rs": _interrupt(db, "backup_restore", "rs", {"vm_id": ids["rs"], "backup_name": backup["backup_name"],
                                                      "power_on": None}),
    }
    calls_before = len(lab.hosts[addr].calls)
    with LiveServer(tmp_path, plugins=registry) as srv:
        admin = srv.admin()
        for name, task_id in started.items():
            task = admin.get(f"/api/tasks/{task_id}")
            assert task["state"] == "success" and task["message"].startswith("recovered after a restart"), task
            assert admin.get(f"/api/client/detail/r/{name}")["status"] == "running"
        assert lab.hosts[addr].vms["up"].spec.cpu_num == 2  # the update reached the host
        again = lab.hosts[addr].calls[calls_before:]
        assert {"vm_update", "vm_delete", "vm_create", "backup_restore"} <= set(again), again
