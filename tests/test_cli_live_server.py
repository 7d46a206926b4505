"""``idcs user ...`` run while a server uses the same database."""

from __future__ import annotations

import time

import pytest
from testlab import TestLabEngine

from idcs_core import cli
from idcs_core.services.auth import TOKEN_RECHECK_SECONDS
from idcs_core.testing.server import ApiClient, LiveServer


def idcs(server: LiveServer, *args: str) -> int:
    """The ``idcs`` command in this process (another core than the server's), on the server's database."""
    return cli.main([*args, "--data-dir", str(server.data_dir), "--database-url", str(server.database_url)])


def test_cli_passwd_stops_old_tokens_on_the_running_server(server: LiveServer, user_factory: object) -> None:
    user: ApiClient = user_factory()  # type: ignore[operator]
    name = user.get("/api/users/current")["username"]
    other = server.client()
    other.login(name, "pw-" + name)
    assert other.get("/api/users/current")["username"] == name  # both tokens are now remembered
    assert idcs(server, "user", "passwd", name, "--password", "pw-new-123") == 0
    changed = time.monotonic()
    codes: list[int] = []
    while time.monotonic() - changed < TOKEN_RECHECK_SECONDS + 3:
        codes = [c.call("GET", "/api/users/current")[1]["code"] for c in (user, other)]
        if codes == [3001, 3001]:
            break
        time.sleep(0.2)
    assert codes == [3001, 3001], f"old tokens still work {time.monotonic() - changed:.1f} s after idcs user passwd"
    status, body = server.client().call("POST", "/login", {"username": name, "password": "pw-" + name})
    assert (status, body["code"]) == (401, 2003)
    server.client().login(name, "pw-new-123")


def test_cli_passwd_stops_old_tokens_at_once_on_postgresql(server: LiveServer, user_factory: object) -> None:
    """On PostgreSQL the running server hears the command's commit (NOTIFY): no recheck wait."""
    if str(server.database_url).startswith("sqlite"):
        pytest.skip("SQLite: the server notices within TOKEN_RECHECK_SECONDS (test above)")
    user: ApiClient = user_factory()  # type: ignore[operator]
    name = user.get("/api/users/current")["username"]  # remembered now
    assert idcs(server, "user", "passwd", name, "--password", "pw-new-456") == 0
    changed = time.monotonic()
    while user.call("GET", "/api/users/current")[1]["code"] != 3001:
        assert time.monotonic() - changed < 1.0, "the old token still works after idcs user passwd"
        time.sleep(0.01)


def test_cli_does_not_fail_the_servers_running_tasks(lab: TestLabEngine, server: LiveServer, admin: ApiClient,
                                                     host: str) -> None:
    lab.faults.delay["vm_create"] = 4
    started = admin.post(f"/api/client/create/{host}", {"vm_uuid": "busy1", "os_name": "busybox", "cpu_num": 1,
                                                        "ram_num": 128, "hdd_num": 1})
    task_id = started["task_id"]
    deadline = time.monotonic() + 5
    while admin.get(f"/api/tasks/{task_id}")["state"] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert idcs(server, "user", "list") == 0
    assert idcs(server, "user", "create", "cli-made", "--password", "pw-cli-123") == 0
    task = admin.get(f"/api/tasks/{task_id}")
    assert task["state"] == "running", task
    assert admin.get(f"/api/client/detail/{host}/busy1")["status"] == "creating"
    assert admin.wait_task(task_id)["state"] == "success"
    assert admin.get(f"/api/client/detail/{host}/busy1")["status"] == "running"
    user = next(u for u in admin.get("/api/users") if u["username"] == "cli-made")
    admin.delete(f"/api/users/{user['id']}")
