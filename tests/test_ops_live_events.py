"""Live events (``GET /api/events``, Server-Sent Events): a client sees a task's progress and end;
a user sees only their own VMs and tasks, an admin sees everything."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from testlab import PASSWORD, TestLabEngine

from idcs_core.hookspecs import hookimpl
from idcs_core.plugins import PluginRegistry
from idcs_core.testing.server import ApiClient, LiveServer
from idcs_core.types import HostSpec, VMInfo, VMSpec


class GatedLab(TestLabEngine):
    """TestLab whose VM creation reports progress, then waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    @hookimpl
    def vm_create(self, host: HostSpec, spec: VMSpec, progress: Any) -> VMInfo:
        progress(30, "copying the image")
        assert self.gate.wait(30), "the test never opened the gate"
        return super().vm_create(host, spec, progress)


class SseClient:
    """Reads ``/api/events`` in a thread; ``messages`` holds (event, data) pairs as they arrive."""

    def __init__(self, url: str, token: str) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.content_type = ""
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(url, token), daemon=True)
        self.thread.start()
        assert self.connected.wait(10), "the event stream did not open"

    def _read(self, url: str, token: str) -> None:
        with httpx.stream("GET", f"{url}/api/events", headers={"Authorization": f"Bearer {token}"},
                          timeout=httpx.Timeout(5, read=None)) as resp:
            self.content_type = resp.headers.get("content-type", "")
            self.connected.set()
            event = ""
            for line in resp.iter_lines():
                if self.stop.is_set():
                    return
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    with self.lock:
                        self.messages.append((event, orjson.loads(line[6:])))

    def wait_for(self, event: str, where: Any = lambda d: True, timeout: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for name, data in self.messages:
                    if name == event and where(data):
                        return data
            time.sleep(0.05)
        raise AssertionError(f"no such {event}; got {self.messages}")

    def names(self) -> list[str]:
        with self.lock:
            return [m[0] for m in self.messages]


_ids = itertools.count(1)


@pytest.fixture(scope="module")
def gated() -> GatedLab:
    return GatedLab()


@pytest.fixture(scope="module")
def live_server(gated: GatedLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    registry = PluginRegistry()
    assert registry.register_engine("GatedLab", gated) is not None, registry.failures
    srv = LiveServer(Path(tmp_path_factory.mktemp("live")), plugins=registry, host_timeout=2.0).start()
    yield srv
    srv.stop()


def _user(admin: ApiClient, server: LiveServer, host: str | None = None) -> ApiClient:
    name = f"live{next(_ids)}"
    uid = admin.post("/api/users", {"username": name, "password": "pw-" + name, "email": f"{name}@example.com"})["id"]
    if host:
        admin.post(f"/api/users/{uid}/hosts/{host}", {})  # customers create only on hosts granted to them
    client = server.client()
    client.login(name, "pw-" + name)
    return client


def test_a_task_progress_and_end_reach_its_owner_only(live_server: LiveServer, gated: GatedLab) -> None:
    admin = live_server.admin()
    admin.post("/api/server/create", {"server_name": "livehost", "server_type": "GatedLab",
                                      "server_addr": "lab://live", "server_user": "root", "server_pass": PASSWORD})
    owner, other = _user(admin, live_server, "livehost"), _user(admin, live_server)
    owner_stream = SseClient(live_server.url, str(owner.token))
    other_stream = SseClient(live_server.url, str(other.token))
    admin_stream = SseClient(live_server.url, str(admin.token))
    assert owner_stream.content_type.startswith("text/event-stream")

    gated.gate.clear()
    started = owner.post("/api/client/create/livehost", {"vm_uuid": "live1", "os_name": "busybox", "cpu_num": 1,
                                                         "ram_num": 64, "hdd_num": 1})
    task_id = started["task_id"]
    # progress while the engine is still working (it waits for the gate)
    # (the runner stores progress reports in no fixed order, so the 5 % of the service may land after
    # the engine's 30 %: any progress > 0 of the running task is what the stream must show)
    progress = owner_stream.wait_for("task_progress", lambda d: d["id"] == task_id and d["progress"] > 0)
    assert progress["state"] == "running" and progress["message"]
    assert progress["kind"] == "vm_create" and progress["vm_uuid"] == "live1"
    admin_stream.wait_for("task_progress", lambda d: d["id"] == task_id)
    gated.gate.set()

    end = owner_stream.wait_for("task_finished", lambda d: d["data"]["task"]["id"] == task_id)
    assert end["data"]["task"]["state"] == "success" and end["data"]["task"]["progress"] == 100
    owner_stream.wait_for("vm_created", lambda d: d["data"]["vm"]["vm_uuid"] == "live1")
    owner.post("/api/client/powers/livehost/live1", {"action": "H_CLOSE"})
    powered = owner_stream.wait_for("vm_powered")
    assert powered["data"]["action"] == "H_CLOSE"

    admin.run_task("DELETE", "/api/client/delete/livehost/live1")
    owner_stream.wait_for("vm_deleted", lambda d: d["data"]["vm"]["vm_uuid"] == "live1")
    admin.delete("/api/server/delete/livehost")

    # the admin saw all of it, and the host's removal; the other user saw none of it
    admin_stream.wait_for("vm_powered")
    admin_stream.wait_for("host_changed", lambda d: d["data"]["change"] == "deleted")
    assert "host_changed" not in owner_stream.names()
    assert other_stream.names() == [], f"another user's stream saw {other_stream.names()}"
    heard = str(owner_stream.messages) + str(admin_stream.messages)
    assert PASSWORD not in heard

    for stream in (owner_stream, other_stream, admin_stream):
        stream.stop.set()
    admin.close()


def test_the_stream_needs_a_login(live_server: LiveServer) -> None:
    resp = httpx.get(f"{live_server.url}/api/events", timeout=5)
    assert resp.status_code == 401 and resp.json()["code"] in (401, 3001)


def test_the_stream_ends_with_the_login(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from idcs_core.ops import live

    monkeypatch.setattr(live, "HEARTBEAT_SECONDS", 1.0)  # the server runs in this process
    admin = live_server.admin()
    user = _user(admin, live_server)
    stream = SseClient(live_server.url, str(user.token))
    user.post("/logout")
    assert stream.wait_for("end")["reason"] == "the login ended"
    stream.thread.join(5)
    assert not stream.thread.is_alive(), "the server closed the stream"
    admin.close()
