"""Scheduled backups against a real Docker Engine (fixture ``oci_backend``): a schedule makes
backups as tasks and keeps only ``retention`` of them, on Docker and in the API; manual backups
stay; the schedule survives a restart of the server. A six-field cron (seconds last) keeps it fast."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idcs_core.testing.server import ApiClient, LiveServer

EVERY_2S = "* * * * * */2"  # six fields: seconds are the LAST one (croniter)


@pytest.fixture(scope="module")
def docker_world(oci_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = Path(tmp_path_factory.mktemp("schedules"))
    srv = LiveServer(folder, subprocess_mode=True, env={"IDCS_LOAD_ENGINES": "OCInterface"}).start()
    yield {"server": srv, "backend": oci_backend, "docker": oci_backend.client()}
    srv.stop()


def scheduled_tasks(admin: ApiClient, vm: str, state: str | None = None) -> list[dict[str, Any]]:
    tasks = admin.get("/api/tasks", params={"limit": 1000, **({"state": state} if state else {})})
    return [t for t in tasks if t["kind"] == "backup_scheduled" and t["vm_uuid"] == vm]


def wait_runs(admin: ApiClient, vm: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(done := scheduled_tasks(admin, vm, "success")) < count:
        failed = scheduled_tasks(admin, vm, "failed")
        assert not failed, f"a scheduled backup failed: {failed[0]}"
        assert time.monotonic() < deadline, f"{len(done)} of {count} scheduled backups after {timeout} s"
        time.sleep(0.2)
    return done


def docker_backups(docker: Any, vm: str) -> set[str]:
    images = docker.images.list(filters={"label": f"idcs.backup.vm_uuid={vm}"})
    return {img.labels["idcs.backup.name"] for img in images}


def test_schedule_keeps_the_retention_count(docker_world: dict[str, Any]) -> None:
    srv: LiveServer = docker_world["server"]
    docker = docker_world["docker"]
    spec = docker_world["backend"].host_spec()
    admin = srv.admin()
    hs, vm = f"sch{secrets.token_hex(3)}", f"sch-{secrets.token_hex(3)}"
    admin.post("/api/server/create", {"server_name": hs, "server_type": "OCInterface", "server_addr": spec.addr,
                                      "server_user": "", "server_pass": "", "options": spec.options})
    admin.run_task("POST", f"/api/client/create/{hs}", {"vm_uuid": vm, "os_name": docker_world["backend"].image,
                                                       "cpu_num": 1, "ram_num": 64, "hdd_num": 1})
    manual = admin.run_task("POST", f"/api/client/backup/create/{hs}/{vm}", {"description": "by hand"})
    manual_name = manual["result"]["backup_name"]

    for bad in ({"cron": "every minute", "retention": 2}, {"cron": "* * * * * * *", "retention": 2},
                {"cron": "* * * * *", "retention": 0}, {"cron": "* * * * *"}):
        status, body = admin.call("POST", f"/api/client/backup/schedule/{hs}/{vm}", bad)
        assert status == 400, (bad, body)
    assert admin.get(f"/api/client/backup/schedule/{hs}/{vm}") == []

    sch = admin.post(f"/api/client/backup/schedule/{hs}/{vm}", {"cron": EVERY_2S, "retention": 2})
    assert sch["cron"] == EVERY_2S and sch["retention"] == 2 and sch["next_run_at"]
    runs = wait_runs(admin, vm, 4)
    assert len({t["id"] for t in runs}) == len(runs)

    # the schedule survives a restart and goes on
    before = len(scheduled_tasks(admin, vm))
    srv.stop()
    srv.start()
    admin = srv.admin()
    (listed,) = admin.get(f"/api/client/backup/schedule/{hs}/{vm}")
    assert listed["id"] == sch["id"] and listed["cron"] == EVERY_2S
    wait_runs(admin, vm, before + 2)

    admin.delete(f"/api/client/backup/schedule/{hs}/{vm}/{sch['id']}")
    deadline = time.monotonic() + 30
    while any(t["state"] in ("pending", "running") for t in scheduled_tasks(admin, vm)):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    listed = admin.get(f"/api/client/backup/schedule/{hs}/{vm}")
    assert listed == []

    # only the two newest scheduled backups are left, beside the manual one: in the API and on Docker
    backups = admin.get(f"/api/client/backup/detail/{hs}/{vm}")
    scheduled = [b for b in backups if b["description"].startswith("scheduled")]
    assert len(scheduled) == 2, backups
    newest = [t["result"]["backup_name"] for t in scheduled_tasks(admin, vm, "success")[:2]]  # newest first
    assert {b["backup_name"] for b in scheduled} == set(newest)
    assert manual_name in {b["backup_name"] for b in backups}
    assert docker_backups(docker, vm) == {manual_name, *newest}

    admin.run_task("DELETE", f"/api/client/delete/{hs}/{vm}")
    for name in docker_backups(docker, vm):
        for img in docker.images.list(filters={"label": f"idcs.backup.name={name}"}):
            docker.images.remove(img.id, force=True)
    admin.delete(f"/api/server/delete/{hs}")
    admin.close()
