"""No data lost across restarts; tasks cut short by a stop are settled from the host at the next start."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import create_vm
from testlab import PASSWORD, TestLabEngine

from idcs_core.plugins import PluginRegistry
from idcs_core.testing.databases import database_url, drop_postgres_schema
from idcs_core.testing.server import LiveServer


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_restart_keeps_records_and_settles_interrupted_tasks(db: str, tmp_path: Path, lab: TestLabEngine,
                                                             registry: PluginRegistry) -> None:
    url = database_url(db, tmp_path)
    addr = f"lab://restart-{db}-{time.monotonic_ns()}"
    try:
        with LiveServer(tmp_path, database_url=url, plugins=registry) as srv:
            admin = srv.admin()
            api_token = admin.get("/api/token/current")["token"]
            admin.post("/api/server/create", {"server_name": "r1", "server_type": "TestLab", "server_addr": addr,
                                              "server_user": "u", "server_pass": PASSWORD})
            create_vm(admin, "r1", "keep")
            admin.post("/api/client/natadd/r1/keep", {"host_port": 2222, "vm_port": 22})
            lab.faults.delay["vm_create"] = 7  # longer than the 5 s shut-down grace
            started = admin.post("/api/client/create/r1", {"vm_uuid": "cut", "os_name": "debian-12", "cpu_num": 2,
                                                           "ram_num": 256, "hdd_num": 1})
            time.sleep(0.3)
            assert admin.get("/api/client/detail/r1/cut")["status"] == "creating"
            assert admin.get("/api/users/current")["quota"]["used_vms"] == 2
        # The stopped server's create still sleeps in its worker thread: it must make nothing (as when the
        # process dies with it), so the next start finds no VM.
        lab.faults.delay.clear()
        lab.faults.fail["vm_create"] = "died with its server"
        with LiveServer(tmp_path, database_url=url, plugins=registry) as srv:
            admin = srv.client(api_token)  # the API token survives the restart
            task = admin.get(f"/api/tasks/{started['task_id']}")  # settled before the server answers
            assert task["state"] == "failed" and "server stopped before cut was made" in task["message"], task
            assert admin.call("GET", "/api/client/detail/r1/cut")[1]["code"] == 1002
            vm = admin.get("/api/client/detail/r1/keep")
            assert vm["status"] == "running"
            assert [r["host_port"] for r in admin.get("/api/client/natget/r1/keep")] == [2222]
            me = srv.admin().get("/api/users/current")
            assert me["quota"]["used_vms"] == 1 and me["quota"]["used_nat"] == 1
            hosts = admin.get("/api/server/detail")  # the API token gets the billing dialect's map
            assert hosts["r1"]["server_name"] == "r1" and hosts["r1"]["status"] == "online"  # password decrypts
    finally:
        time.sleep(0)  # the cut create may still finish in its worker thread; the lab is per test
        if db == "postgresql":
            drop_postgres_schema(url)
