"""Contract basics: login, lockout, API token, the OpenAPI document against API.md, TLS."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from idcs_core.testing.server import ADMIN_PASSWORD, ApiClient, LiveServer

API_MD = Path(__file__).resolve().parents[1] / "docs" / "API.md"


def contract_routes() -> set[tuple[str, str]]:
    routes = set()
    for method, path in re.findall(r"^\| (GET|POST|PUT|DELETE) \| (/\S+) \|", API_MD.read_text(), re.M):
        routes.add((method, re.sub(r"<(\w+)>", r"{\1}", path)))
    return routes


def test_openapi_describes_every_contract_route(server: LiveServer) -> None:
    if not API_MD.exists():
        pytest.fail(f"the contract {API_MD} is missing")
    doc = httpx.get(f"{server.url}/openapi.json").json()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    missing = contract_routes() - documented
    assert not missing, f"routes of API.md missing from the server: {sorted(missing)}"
    assert len(contract_routes()) > 50
    page = httpx.get(f"{server.url}/docs")
    assert page.status_code == 200 and "/api/client/natadd/{hs_name}/{vm_uuid}" in page.text


def test_login_shapes_and_current_user(server: LiveServer) -> None:
    c = server.client()
    data = c.post("/login", {"username": "admin", "password": ADMIN_PASSWORD})
    assert set(data) == {"token", "user_id", "username", "is_admin"} and data["token"].count(".") == 2
    c.token = data["token"]
    me = c.get("/api/users/current")
    assert {"id", "username", "email", "is_admin", "created_at"} <= set(me)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", me["created_at"])
    status, body = c.call("POST", "/login", {"username": "admin", "password": "nope"})
    assert (status, body["code"]) == (401, 2003)
    status, body = c.call("POST", "/login", {"username": "ghost", "password": "nope"})
    assert (status, body["code"]) == (404, 2002)


def test_repeated_failures_lock_the_user_name(server: LiveServer, user_factory: object) -> None:
    user = user_factory()  # type: ignore[operator]
    name = user.get("/api/users/current")["username"]
    c = server.client()
    codes = [c.call("POST", "/login", {"username": name, "password": "wrong"})[1]["code"] for _ in range(6)]
    assert codes[:4] == [2003] * 4 and codes[5] == 2004
    status, body = c.call("POST", "/login", {"username": name, "password": "pw-" + name})
    assert (status, body["code"]) == (429, 2004)  # even the right password waits out the lock


def test_api_token_is_admin_and_reset_revokes_it(server: LiveServer, admin: ApiClient) -> None:
    token = admin.get("/api/token/current")["token"]
    by_token = server.client(token)
    assert by_token.get("/api/users/current")["is_admin"] is True
    assert isinstance(by_token.get("/api/users"), list)
    new = admin.post("/api/token/reset")["token"]
    assert new != token
    status, body = by_token.call("GET", "/api/users")
    assert body["code"] in (3001, 3002) and status == 401
    admin.post("/api/token/set", {"token": token})
    assert by_token.get("/api/users/current")["is_admin"] is True


def test_change_password_logs_out_other_sessions(server: LiveServer, user_factory: object) -> None:
    first = user_factory()  # type: ignore[operator]
    name = first.get("/api/users/current")["username"]
    second = server.client()
    second.login(name, "pw-" + name)
    first.post("/api/users/change-password", {"old_password": "pw-" + name, "new_password": "new-pw-123"})
    assert second.call("GET", "/api/users/current")[1]["code"] == 3001
    third = server.client()
    third.login(name, "new-pw-123")


def test_quota_enforced_on_create_and_update(server: LiveServer, admin: ApiClient, host: str,
                                             user_factory: object) -> None:
    user = user_factory({"max_vms": 1, "max_cpu": 2, "max_ram": 1024, "max_hdd": 20})  # type: ignore[operator]
    base = {"os_name": "ubuntu-22.04", "cpu_num": 1, "ram_num": 512, "hdd_num": 10}
    user.run_task("POST", f"/api/client/create/{host}", base | {"vm_uuid": "q1"})
    status, body = user.call("POST", f"/api/client/create/{host}", base | {"vm_uuid": "q2"})
    assert (status, body["code"]) == (403, 4001) and "VMs" in body["msg"]
    status, body = user.call("PUT", f"/api/client/update/{host}/q1", {"cpu_num": 3})
    assert (status, body["code"]) == (403, 4001) and "CPU" in body["msg"]
    assert user.get(f"/api/client/detail/{host}/q1")["cpu_num"] == 1
    user.run_task("PUT", f"/api/client/update/{host}/q1", {"cpu_num": 2})
    quota = user.get("/api/users/current")["quota"]
    assert (quota["used_vms"], quota["used_cpu"], quota["used_ram"]) == (1, 2, 512)
    recount = admin.post("/api/system/recalculate-quotas")
    mine = next(r for r in recount if r["username"] == user.get("/api/users/current")["username"])
    assert (mine["used_vms"], mine["used_cpu"], mine["used_hdd"]) == (1, 2, 10)


def test_stats_and_audit_log(admin: ApiClient, host: str) -> None:
    stats = admin.get("/api/system/stats")
    for key in ("hosts_count", "vms_count", "users_count"):
        assert isinstance(stats[key], int)
    for key in ("cpu_usage", "memory_usage", "disk_usage"):
        assert isinstance(stats[key], float)
    assert stats["cpu_usage"] == 12.5 and stats["usage_source"] == "hosts"  # the TestLab hosts report 12.5
    log = admin.get("/api/system/logger/detail", params={"limit": 5})
    assert len(log) <= 5 and log[0]["action"] == "host.create" and log[0]["target"] == host


def test_https_with_self_signed_certificate(tmp_path: Path) -> None:
    with LiveServer(tmp_path, subprocess_mode=True, tls=True) as srv:
        assert srv.url.startswith("https://")
        c = srv.admin()
        assert c.get("/api/users/current")["username"] == "admin"
    assert (tmp_path / "tls" / "self-signed.crt").exists()


def test_openapi_marks_the_billing_dialect(server: LiveServer) -> None:
    doc = httpx.get(f"{server.url}/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert schemas["VMCreate"]["properties"]["ram_num"]["x-idcs-aliases"] == ["mem_num"]
    assert set(schemas["NatAdd"]["properties"]["host_port"]["x-idcs-aliases"]) == {"wan_port"}
    assert doc["paths"]["/api/login"]["post"]["x-idcs-alias-of"] == "/login"
    assert doc["paths"]["/api/system/statis"]["get"]["x-idcs-alias-of"] == "/api/system/stats"
    compat_routes = {p for p, ops in doc["paths"].items() for op in ops.values() if op["tags"] == ["compat"]}
    assert {"/api/client/temptoken/{hs_name}/{vm_uuid}", "/api/client/templogin", "/api/traffic/reset",
            "/api/logout"} <= compat_routes


def test_contract_copy_matches_the_shared_contract() -> None:
    """docs/API.md is the project's copy of the contract: identical to shared/API.md where that exists."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "API.md"
    if not shared.exists():
        pytest.skip("no shared/ beside this clone: docs/API.md is the contract")
    assert API_MD.read_text() == shared.read_text(), "docs/API.md differs from shared/API.md"
