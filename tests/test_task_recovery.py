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


def test_interrupted_disk_changes_are_finished_or_undone(tmp_path: Path, lab: TestLabEngine,
                                                         registry: PluginRegistry) -> None:
    """disk_add / disk_remove / disk_delete left running: the attach, detach and delete the user asked
    for are finished; an attach whose VM is gone is undone (record and quota given back)."""
    addr = f"lab://disks-{time.monotonic_ns()}"
    with LiveServer(tmp_path, plugins=registry) as srv:
        admin = srv.admin()
        admin.post("/api/server/create", {"server_name": "r", "server_type": "TestLab", "server_addr": addr,
                                          "server_user": "u", "server_pass": PASSWORD})
        for name in ("dk", "gn"):
            create_vm(admin, "r", name)
        for vm, disk, size in (("dk", "a", 1), ("dk", "b", 2), ("dk", "c", 3), ("gn", "g", 4)):
            assert admin.post(f"/api/client/hdd/mount/r/{vm}", {"hdd_name": disk, "hdd_size": size})["mounted"]
        used = admin.get("/api/users/current")["quota"]["used_hdd"]
    db = tmp_path / "idcs.db"
    with sqlite3.connect(db) as con:
        disk_ids = {name: i for i, name in con.execute("SELECT id, name FROM disks").fetchall()}
        con.execute("UPDATE disks SET mounted = 0 WHERE name IN ('c', 'g')")  # recorded, attach cut short
    lab_vms = lab.hosts[addr].vms
    lab_vms["dk"].disks["c"] = False
    del lab_vms["gn"]  # the VM went away behind the server's back
    started = {
        "a": _interrupt(db, "disk_remove", "dk", {"disk_id": disk_ids["a"]}),
        "b": _interrupt(db, "disk_delete", "dk", {"disk_id": disk_ids["b"]}),
        "c": _interrupt(db, "disk_add", "dk", {"disk_id": disk_ids["c"], "created": True}),
        "g": _interrupt(db, "disk_add", "gn", {"disk_id": disk_ids["g"], "created": True}),
    }
    with LiveServer(tmp_path, plugins=registry) as srv:
        admin = srv.admin()
        done = {disk: admin.wait_task(task_id, 30) for disk, task_id in started.items()}
        for disk in ("a", "b", "c"):
            assert done[disk]["state"] == "success", done[disk]
            assert done[disk]["message"].startswith("recovered after a restart"), done[disk]
        assert done["g"]["state"] == "failed" and "the VM is gone" in done["g"]["message"], done["g"]
        assert admin.get("/api/client/hdd/detail/r/dk") == [
            {"hdd_name": "a", "hdd_size": 1, "mounted": False}, {"hdd_name": "c", "hdd_size": 3, "mounted": True}]
        assert admin.get("/api/client/hdd/detail/r/gn") == []
        assert admin.get("/api/users/current")["quota"]["used_hdd"] == used - 2 - 4
    assert lab_vms["dk"].disks == {"a": False, "c": True}


def test_an_interrupted_scheduled_backup_is_kept_if_complete_else_removed(tmp_path: Path, lab: TestLabEngine,
                                                                           registry: PluginRegistry) -> None:
    addr = f"lab://sched-{time.monotonic_ns()}"
    with LiveServer(tmp_path, plugins=registry) as srv:
        admin = srv.admin()
        admin.post("/api/server/create", {"server_name": "r", "server_type": "TestLab", "server_addr": addr,
                                          "server_user": "u", "server_pass": PASSWORD})
        create_vm(admin, "r", "sc")
    db = tmp_path / "idcs.db"
    with sqlite3.connect(db) as con:
        [(vm_id, host_id)] = con.execute("SELECT id, host_id FROM vms WHERE vm_uuid = 'sc'").fetchall()
        schedules = {}
        for name in ("done", "cut"):  # disabled: only the recovery runs them
            cur = con.execute("INSERT INTO backup_schedules (vm_id, cron, retention, enabled, next_run_at, last_state, "
                              "last_error, created_at) VALUES (?, '@daily', 3, 0, '2027-01-01 00:00:00.000000', "
                              "'running', '', '2026-12-02 06:00:00.000000')", (vm_id,))
            schedules[name] = cur.lastrowid
            con.execute("INSERT INTO backups (host_id, vm_uuid, backup_name, description, status, created_at, "
                        "schedule_id) VALUES (?, 'sc', ?, 'scheduled', 'creating', '2026-12-02 06:00:00.000000', ?)",
                        (host_id, f"b-{name}", schedules[name]))
    lab_host = lab.hosts[addr]
    lab_host.backups[("sc", "b-done")] = lab_host.vms["sc"]  # the host finished this one
    started = {name: _interrupt(db, "backup_scheduled", "sc", {"schedule_id": sid, "vm_id": vm_id})
               for name, sid in schedules.items()}
    with LiveServer(tmp_path, plugins=registry) as srv:
        admin = srv.admin()
        done = {name: admin.wait_task(task_id, 30) for name, task_id in started.items()}
        assert done["done"]["state"] == "success" and "b-done was complete" in done["done"]["message"], done
        assert done["cut"]["state"] == "failed" and "was removed" in done["cut"]["message"], done
        names = {b["backup_name"] for b in admin.get("/api/client/backup/detail/r/sc")}
        assert "b-done" in names and "b-cut" not in names, names
    with sqlite3.connect(db) as con:
        states = dict(con.execute("SELECT id, last_state FROM backup_schedules").fetchall())
        assert (states[schedules["done"]], states[schedules["cut"]]) == ("success", "failed")
        assert con.execute("SELECT status FROM backups WHERE backup_name = 'b-done'").fetchall() == [("ready",)]
    assert ("sc", "b-cut") not in lab_host.backups
