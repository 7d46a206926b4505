"""A create that times out leaves no VM behind, even when the engine finishes it afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testlab import PASSWORD, TestLabEngine

from idcs_core.config import Config
from idcs_core.plugins import PluginRegistry
from idcs_core.testing.server import ApiClient, LiveServer


class ShortTasks(LiveServer):
    def _config(self) -> Config:
        config = super()._config()
        config.task_timeout = 1.0
        return config


@pytest.fixture
def short(registry: PluginRegistry, tmp_path: Path) -> Iterator[ApiClient]:
    srv = ShortTasks(tmp_path, plugins=registry, host_timeout=2.0).start()
    admin = srv.admin()
    admin.post("/api/server/create", {"server_name": "slow", "server_type": "TestLab", "server_addr": "lab://slow",
                                      "server_user": "root", "server_pass": PASSWORD})
    yield admin
    admin.close()
    srv.stop()


def test_late_vm_is_removed(short: ApiClient, lab: TestLabEngine) -> None:
    lab.faults.delay["vm_create"] = 2.5  # the engine makes the VM 2.5 s in; the task gives up at 1 s
    started = short.post("/api/client/create/slow", {"vm_uuid": "late1", "os_name": "ubuntu-22.04", "cpu_num": 1,
                                                      "ram_num": 512, "hdd_num": 1})
    task = short.wait_task(started["task_id"])
    assert task["state"] == "failed" and task["result"]["code"] == 1003, task
    assert short.get("/api/users/current")["quota"]["used_vms"] == 0
    lab_host = lab.hosts["lab://slow"]
    deadline = time.monotonic() + 10
    while "vm_delete" not in lab_host.calls:
        assert time.monotonic() < deadline, f"the late VM was never removed: {lab_host.calls}"
        time.sleep(0.1)
    assert "late1" not in lab_host.vms
