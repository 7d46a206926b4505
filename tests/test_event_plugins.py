"""Plugins that are not engines (audit, billing, webhooks) hear what happened, without secrets.

A recording plugin and a broken one (every hook raises) are registered beside the TestLab
engine; the broken one must neither stop the server nor keep the others from hearing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testlab import PASSWORD, TestLabEngine

from idcs_core.hookspecs import hookimpl
from idcs_core.plugins import PluginRegistry
from idcs_core.testing.server import ApiClient, LiveServer


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def _add(self, name: str, **data: Any) -> None:
        with self.lock:
            self.events.append((name, data))

    @hookimpl
    def idcs_startup(self, config: dict[str, Any]) -> None:
        self._add("idcs_startup", config=config)

    @hookimpl
    def user_logged_in(self, user: dict[str, Any], source_ip: str) -> None:
        self._add("user_logged_in", user=user, source_ip=source_ip)

    @hookimpl
    def host_changed(self, host: dict[str, Any], change: str) -> None:
        self._add("host_changed", host=host, change=change)

    @hookimpl
    def vm_created(self, vm: dict[str, Any]) -> None:
        self._add("vm_created", vm=vm)

    @hookimpl
    def vm_deleted(self, vm: dict[str, Any]) -> None:
        self._add("vm_deleted", vm=vm)

    @hookimpl
    def vm_powered(self, vm: dict[str, Any], action: str) -> None:
        self._add("vm_powered", vm=vm, action=action)

    @hookimpl
    def task_finished(self, task: dict[str, Any]) -> None:
        self._add("task_finished", task=task)

    def wait_for(self, name: str, where: Any = lambda data: True, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for event, data in self.events:
                    if event == name and where(data):
                        return data
            time.sleep(0.05)
        raise AssertionError(f"no {name} event; heard: {[e for e, _ in self.events]}")


class Broken:
    """Every event hook raises."""

    @hookimpl
    def user_logged_in(self, user: dict[str, Any], source_ip: str) -> None:
        raise RuntimeError("broken plugin")

    @hookimpl
    def vm_created(self, vm: dict[str, Any]) -> None:
        raise RuntimeError("broken plugin")

    @hookimpl
    def task_finished(self, task: dict[str, Any]) -> None:
        raise RuntimeError("broken plugin")


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def events_server(lab: TestLabEngine, recorder: Recorder, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[LiveServer]:
    registry = PluginRegistry()
    assert registry.register_engine("TestLab", lab) is not None
    # registered on both sides of the recorder: pluggy calls the newest first
    registry.register_event_plugin("broken-first", Broken())
    registry.register_event_plugin("recorder", recorder)
    registry.register_event_plugin("broken-last", Broken())
    assert registry.failures == []
    srv = LiveServer(Path(tmp_path_factory.mktemp("events")), plugins=registry, host_timeout=2.0).start()
    yield srv
    srv.stop()


def test_events_of_a_vm_life(events_server: LiveServer, recorder: Recorder) -> None:
    assert recorder.wait_for("idcs_startup")["config"]["database"] == "sqlite"
    admin: ApiClient = events_server.admin()
    login = recorder.wait_for("user_logged_in")
    assert login["user"]["username"] == "admin" and login["source_ip"] == "127.0.0.1"

    admin.post("/api/server/create", {"server_name": "evhost", "server_type": "TestLab",
                                      "server_addr": "lab://evhost", "server_user": "root", "server_pass": PASSWORD})
    assert recorder.wait_for("host_changed", lambda d: d["change"] == "created")["host"]["server_name"] == "evhost"

    admin.run_task("POST", "/api/client/create/evhost", {"vm_uuid": "ev1", "os_name": "ubuntu-22.04", "cpu_num": 1,
                                                         "ram_num": 512, "hdd_num": 1, "os_pass": "Secret-Root-7"})
    created = recorder.wait_for("vm_created")["vm"]
    assert created["vm_uuid"] == "ev1"
    task = recorder.wait_for("task_finished", lambda d: d["task"]["kind"] == "vm_create")["task"]
    assert task["state"] == "success"

    admin.post("/api/client/powers/evhost/ev1", {"action": "H_CLOSE"})
    assert recorder.wait_for("vm_powered")["action"] == "H_CLOSE"

    admin.run_task("DELETE", "/api/client/delete/evhost/ev1")
    assert recorder.wait_for("vm_deleted")["vm"]["vm_uuid"] == "ev1"
    admin.delete("/api/server/delete/evhost")
    recorder.wait_for("host_changed", lambda d: d["change"] == "deleted")

    heard = str(recorder.events)
    assert "Secret-Root-7" not in heard and PASSWORD not in heard, "an event carried a secret"
    # the broken plugins raised on every event they implement, and the server went on
    assert admin.get("/api/system/engine") == ["TestLab"]
    admin.close()
