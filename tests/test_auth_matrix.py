"""Every route x {no token, bad token, expired, revoked, other user's VM, user on admin route, admin}."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from helpers import create_vm

from idcs_core.api.routing import ADMIN, PUBLIC, Endpoint
from idcs_core.app import endpoints
from idcs_core.testing.server import ApiClient, LiveServer

AUTH_CODES = {401, 403, 3001, 3002}
# Valid bodies, so that a refusal can only come from the permission check.
SAMPLES: dict[str, dict[str, Any]] = {
    "/api/client/create": {"vm_uuid": "mx-new", "os_name": "busybox", "cpu_num": 1, "ram_num": 128, "hdd_num": 1},
    "/api/client/update": {"cpu_num": 1},
    "/api/client/powers": {"action": "S_START"},
    "/api/client/password": {"password": "Secret-123"},
    "/api/client/natadd": {"host_port": 20001, "vm_port": 80},
    "/api/client/ipaddr/create": {},
    "/api/client/proxys/create": {"domain": "mx.example.com"},
    "/api/client/hdd/mount": {"hdd_name": "d1", "hdd_size": 1},
    "/api/client/iso/mount": {"iso_name": "x.iso"},
    "/api/client/backup/restore": {"backup_name": "bk1"},
    "/api/client/backup/delete": {"backup_name": "bk1"},
    "/api/client/backup/schedule": {"cron": "@daily", "retention": 2},
    "/api/server/create": {"server_name": "mxh", "server_type": "TestLab", "server_addr": "lab://mxh",
                           "server_user": "u", "server_pass": "x"},
    "/api/server/update": {"server_area": "x"},
    "/api/server/powers": {"enable": True},
    "/api/users": {"username": "mxuser", "password": "pw-123456", "email": "a@example.com"},
    "/api/token/set": {"token": "t" * 20},
    "/api/system/settings": {"panel_name": "x"},
    "/api/users/change-password": {"old_password": "x", "new_password": "y-123456"},
    "/api/users/change-email": {"email": "b@example.com"},
    "/login": {"username": "nobody", "password": "x"},
    "/api/login": {"username": "nobody", "password": "x"},
}


def body_for(ep: Endpoint) -> dict[str, Any] | None:
    if ep.method == "GET":
        return None
    for prefix, sample in SAMPLES.items():
        if ep.path == prefix or ep.path.startswith(prefix + "/"):
            return sample
    return {}


class World:
    def __init__(self, server: LiveServer, admin: ApiClient, owner: ApiClient, other: ApiClient, host: str):
        self.server, self.admin, self.owner, self.other, self.host = server, admin, owner, other, host

    def path(self, ep: Endpoint, host: str | None = None) -> str:
        values = {"hs_name": host or self.host, "vm_uuid": "mxvm", "user_id": "1", "task_id": "t1",
                  "ip_index": "0", "rule_index": "0", "proxy_index": "0", "iso_name": "x.iso", "plan_name": "S",
                  "token_id": "1",
                  "webhook_id": "1", "schedule_id": "1"}
        return re.sub(r"{(\w+)(?::\w+)?}", lambda m: values[m.group(1)], ep.path)

    def token(self, **claims: Any) -> str:
        secret = (Path(self.server.data_dir) / "jwt.key").read_bytes().strip()
        now = int(time.time())
        payload = {"sub": "1", "jti": "x" * 32, "iat": now - 100, "exp": now + 100, "iss": "idcs"} | claims
        return jwt.encode(payload, secret, algorithm="HS256")


@pytest.fixture(scope="module")
def world(server: LiveServer) -> Iterator[World]:
    admin = server.admin()
    admin.post("/api/server/create", {"server_name": "mxhost", "server_type": "TestLab",
                                      "server_addr": f"lab://mxhost-{id(server)}", "server_user": "u",
                                      "server_pass": "lab-pass"})
    made = []
    clients = []
    for name in ("mxowner", "mxother"):
        made.append(admin.post("/api/users", {"username": name, "password": "pw-" + name,
                                              "email": f"{name}@example.com"})["id"])
        admin.post(f"/api/users/{made[-1]}/hosts/mxhost", {})
        c = server.client()
        c.login(name, "pw-" + name)
        clients.append(c)
    create_vm(clients[0], "mxhost", "mxvm", os_name="busybox")
    yield World(server, admin, clients[0], clients[1], "mxhost")
    admin.call("DELETE", "/api/server/delete/mxhost", params={"force": "true"})
    for uid in made:
        admin.call("DELETE", f"/api/users/{uid}")


PROTECTED = [ep for ep in endpoints() if ep.auth != PUBLIC]


def ids(ep: Endpoint) -> str:
    return f"{ep.method} {ep.path}"


@pytest.mark.parametrize("ep", PROTECTED, ids=ids)
def test_without_valid_token(world: World, ep: Endpoint) -> None:
    client = world.server.client()
    path = world.path(ep)
    cases = [
        (None, 401, 401),
        ("garbage", 3001, 401),
        (world.token(exp=int(time.time()) - 10), 3002, 401),  # expired
        (world.token(jti="never-issued"), 3001, 401),         # well signed, unknown session
    ]
    for token, code, status in cases:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        got_status, body = client.call(ep.method, path, body_for(ep), headers=headers)
        assert (got_status, body["code"]) == (status, code), (token, body)


def test_revoked_token_stops_at_once(world: World) -> None:
    c = world.server.client()
    token = c.login("mxowner", "pw-mxowner")
    assert c.get("/api/users/current")["username"] == "mxowner"
    c.post("/logout")
    status, body = c.call("GET", "/api/users/current")
    assert (status, body["code"]) == (401, 3001)
    status, body = c.call("GET", "/api/client/detail/mxhost/mxvm", headers={"Authorization": f"Bearer {token}"})
    assert body["code"] == 3001


@pytest.mark.parametrize("ep", [ep for ep in PROTECTED if ep.auth == ADMIN], ids=ids)
def test_normal_user_on_admin_route(world: World, ep: Endpoint) -> None:
    status, body = world.owner.call(ep.method, world.path(ep), body_for(ep))
    assert (status, body["code"]) == (403, 403), body


@pytest.mark.parametrize("ep", [ep for ep in PROTECTED if ep.auth != ADMIN and "{vm_uuid}" in ep.path], ids=ids)
def test_normal_user_on_someone_elses_vm(world: World, ep: Endpoint) -> None:
    status, body = world.other.call(ep.method, world.path(ep), body_for(ep))
    assert (status, body["code"]) == (403, 403), body
    # and the owner passes the permission check
    if ep.method == "GET":
        status, body = world.owner.call(ep.method, world.path(ep), body_for(ep))
        assert body["code"] not in AUTH_CODES, body


def test_normal_user_lists_only_own_vms(world: World) -> None:
    assert [v["vm_uuid"] for v in world.owner.get("/api/client/detail/mxhost")] == ["mxvm"]
    assert world.other.get("/api/client/detail/mxhost") == []
    assert [v["vm_uuid"] for v in world.admin.get("/api/client/detail/mxhost")] == ["mxvm"]


@pytest.mark.parametrize("ep", PROTECTED, ids=ids)
def test_admin_passes(world: World, ep: Endpoint) -> None:
    if ep.path in ("/logout", "/api/logout", "/api/token/reset", "/api/token/set"):
        pytest.skip("ends the admin session or changes the shared token: covered in test_api_basics")
    if ep.path == "/api/events":
        pytest.skip("a stream that does not end: the admin's stream is covered in test_ops_live_events")
    # a host that does not exist: every route answers without touching the world
    status, body = world.admin.call(ep.method, world.path(ep, host="nohost"), body_for(ep))
    assert body["code"] not in AUTH_CODES, body
    assert status < 500 or body["code"] in (1003, 1006), body
