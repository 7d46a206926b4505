"""The audit log tells how a long operation ended, not only that it was asked for."""

from __future__ import annotations

from testlab import TestLabEngine

from idcs_core.testing.server import ApiClient

SPEC = {"os_name": "ubuntu-22.04", "cpu_num": 1, "ram_num": 512, "hdd_num": 1}


def _entries(admin: ApiClient, action: str, target: str) -> list[dict]:
    logs = admin.get("/api/system/logger/detail", params={"limit": 200})
    return [e for e in logs if e["action"] == action and e["target"] == target]


def test_failed_create_is_logged_as_failed(admin: ApiClient, host: str, lab: TestLabEngine) -> None:
    lab.faults.fail["vm_create"] = "disk full on the back end"
    started = admin.post(f"/api/client/create/{host}", {"vm_uuid": "aud1", **SPEC})
    assert admin.wait_task(started["task_id"])["state"] == "failed"
    entries = _entries(admin, "vm.create", f"{host}/aud1")
    # newest first: the task's outcome, then the request that started it
    assert [e["result"] for e in entries] == ["failed", "started"], entries
    assert "disk full on the back end" in entries[0]["detail"] and started["task_id"] in entries[0]["detail"]
    assert entries[0]["username"] == entries[1]["username"] == "admin"
    assert entries[0]["level"] == "WARNING"


def test_successful_backup_is_logged_when_it_is_done(admin: ApiClient, host: str) -> None:
    admin.run_task("POST", f"/api/client/create/{host}", {"vm_uuid": "aud2", **SPEC})
    assert [e["result"] for e in _entries(admin, "vm.create", f"{host}/aud2")] == ["success", "started"]
    admin.run_task("POST", f"/api/client/backup/create/{host}/aud2", {"description": "nightly"})
    assert [e["result"] for e in _entries(admin, "backup.create", f"{host}/aud2")] == ["success", "started"]
    admin.run_task("DELETE", f"/api/client/delete/{host}/aud2")
    assert next(e["result"] for e in _entries(admin, "vm.delete", f"{host}/aud2")) == "success"
