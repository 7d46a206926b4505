"""Issue 10: ids never reused, validation before action, safe defaults, throttled logins,
temp tokens exchanged once, and the low items (log forging, secrets in URLs, 500s, headers).

This module has its own ``server`` (TestLab plus the example engine, whose fake back end
serves reverse proxies, which TestLab does not), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

import httpx
import jwt
import pytest
from helpers import create_vm
from idcs_example import fakecloud
from idcs_example.engine import ExampleEngine
from testlab import TestLabEngine

from idcs_core.plugins import PluginRegistry
from idcs_core.testing.databases import database_url, drop_postgres_schema
from idcs_core.testing.server import ApiClient, LiveServer

_n = itertools.count(1)
FAKE_ADDR = "fake://sec-proxies"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, lab: TestLabEngine, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[LiveServer]:
    registry = PluginRegistry()
    assert registry.register_engine("TestLab", lab) is not None, registry.failures
    assert registry.register_engine("ExampleLab", ExampleEngine()) is not None, registry.failures
    folder = tmp_path_factory.mktemp(f"sec-{request.param}")
    url = database_url(request.param, folder)
    srv = LiveServer(folder, database_url=url, plugins=registry, host_timeout=2.0).start()
    yield srv
    srv.stop()
    if request.param == "postgresql":
        drop_postgres_schema(url)


@pytest.fixture(scope="module")
def fake_host(server: LiveServer) -> Iterator[str]:
    """A host of the example engine (it serves reverse proxies)."""
    fakecloud.start(FAKE_ADDR, user="admin", password="s3cret")
    admin = server.admin()
    name = f"fake{next(_n)}"
    admin.post("/api/server/create", {"server_name": name, "server_type": "ExampleLab", "server_addr": FAKE_ADDR,
                                      "server_user": "admin", "server_pass": "s3cret"})
    yield name
    admin.call("DELETE", f"/api/server/delete/{name}", params={"force": "true"})
    fakecloud.stop(FAKE_ADDR)
    admin.close()


def new_user(admin: ApiClient, server: LiveServer, **extra: Any) -> tuple[int, ApiClient, str]:
    """A user made as an operator would (no quota given, no host granted): (id, client, name)."""
    name = f"sec{next(_n)}"
    data = admin.post("/api/users", {"username": name, "password": "pw-" + name, "email": f"{name}@example.com"}
                      | extra)
    client = server.client()
    client.login(name, "pw-" + name)
    return data["id"], client, name


def grant(admin: ApiClient, user_id: int, hs_name: str) -> None:
    admin.post(f"/api/users/{user_id}/hosts/{hs_name}", {})


def client_from(server: LiveServer, address: str) -> httpx.Client:
    """HTTP from another loopback source address (127.x.y.z all reach the server on Linux)."""
    return httpx.Client(base_url=server.url, timeout=60, transport=httpx.HTTPTransport(local_address=address))


def set_settings(admin: ApiClient, **values: Any) -> dict[str, Any]:
    before = admin.get("/api/system/settings")
    old = {k: before["settings"][k] for k in values}
    admin.post("/api/system/settings", values)
    return old


VM = {"os_name": "ubuntu-22.04", "cpu_num": 1, "ram_num": 512, "hdd_num": 10}


# ---------------------------------------------------------------------- ids and bindings


def test_a_new_user_never_gets_a_deleted_users_id_or_tasks(admin: ApiClient, host: str, server: LiveServer) -> None:
    uid, first, _ = new_user(admin, server, quota={"max_vms": 5})
    grant(admin, uid, host)
    create_vm(first, host, "ids1")
    assert first.get("/api/tasks"), "the first user sees their create task"
    admin.run_task("DELETE", f"/api/client/delete/{host}/ids1")
    admin.delete(f"/api/users/{uid}")
    uid2, second, _ = new_user(admin, server)
    assert uid2 > uid, "a deleted user's id was handed out again"
    assert second.get("/api/tasks") == [], "a new user sees a deleted user's tasks"
    admin.delete(f"/api/users/{uid2}")


def test_a_temp_token_of_a_deleted_vm_does_not_reach_the_next_vm(admin: ApiClient, host: str,
                                                                  server: LiveServer) -> None:
    uid, owner, _ = new_user(admin, server)
    uid2, other, _ = new_user(admin, server)
    for u in (uid, uid2):
        grant(admin, u, host)
    create_vm(owner, host, "tmp1")
    temp = admin.get(f"/api/client/temptoken/{host}/tmp1")["temp_token"]
    holder = server.client(temp)
    assert holder.get(f"/api/client/detail/{host}/tmp1")["vm_uuid"] == "tmp1"  # remembered for a while now
    admin.run_task("DELETE", f"/api/client/delete/{host}/tmp1")
    create_vm(other, host, "tmp1")
    status, body = holder.call("GET", f"/api/client/detail/{host}/tmp1")
    assert status in (401, 403), body
    assert holder.call("GET", f"/api/client/detail/{host}")[1]["data"] in (None, []), "the list shows the new VM"
    admin.run_task("DELETE", f"/api/client/delete/{host}/tmp1")
    for u in (uid, uid2):
        admin.delete(f"/api/users/{u}")


# ---------------------------------------------------------------------- validation before action


def test_a_bad_wait_changes_nothing(admin: ApiClient, host: str) -> None:
    status, body = admin.call("POST", f"/api/client/create/{host}", {"vm_uuid": "wait1"} | VM,
                              params={"wait": "soon"})
    assert (status, body["code"]) == (400, 400), body
    assert admin.call("GET", f"/api/client/detail/{host}/wait1")[1]["code"] == 1002, "created although refused"
    create_vm(admin, host, "wait2")
    for bad in ("-1", "nan", "99999"):
        status, body = admin.call("DELETE", f"/api/client/delete/{host}/wait2", params={"wait": bad})
        assert (status, body["code"]) == (400, 400), (bad, body)
    assert admin.get(f"/api/client/detail/{host}/wait2")["status"] not in ("deleting",), "deleted although refused"
    admin.run_task("DELETE", f"/api/client/delete/{host}/wait2")


def test_oversized_integers_answer_400_and_the_list_keeps_working(admin: ApiClient, host: str) -> None:
    create_vm(admin, host, "big1")
    r = admin.http.put(f"/api/client/update/{host}/big1", content=f"flu_num={10**30}",
                       headers={"Authorization": f"Bearer {admin.token}",
                                "Content-Type": "application/x-www-form-urlencoded"})
    assert (r.status_code, r.json()["code"]) == (400, 400), r.text
    assert [v["vm_uuid"] for v in admin.get(f"/api/client/detail/{host}")] == ["big1"]
    for quota in ({"max_cpu": 2**63}, {"max_vms": 2**31}, {"max_ram": 10**30}):
        status, body = admin.call("POST", "/api/users", {"username": f"q{next(_n)}", "password": "pw-123456",
                                                         "email": "q@example.com", "quota": quota})
        assert (status, body["code"]) == (400, 400), (quota, body)
    status, body = admin.call("POST", f"/api/client/create/{host}", {"vm_uuid": "big2", "owner_id": 2**63} | VM)
    assert (status, body["code"]) == (400, 400), body
    assert admin.get(f"/api/client/detail/{host}/big1")["vm_uuid"] == "big1"
    admin.run_task("DELETE", f"/api/client/delete/{host}/big1")


# ---------------------------------------------------------------------- safe defaults


def test_new_users_get_small_quotas_and_only_granted_hosts(admin: ApiClient, host: str, server: LiveServer) -> None:
    uid, user, _ = new_user(admin, server)
    quota = admin.get(f"/api/users/{uid}")["quota"]
    assert all(0 <= quota[k] for k in ("max_vms", "max_cpu", "max_ram", "max_hdd", "max_nat", "max_ips")), quota
    assert quota["max_vms"] <= 10 and quota["max_hdd"] <= 1024, quota
    status, body = user.call("POST", f"/api/client/create/{host}", {"vm_uuid": "grant1"} | VM)
    assert (status, body["code"]) == (403, 403), body
    assert admin.call("GET", f"/api/client/detail/{host}/grant1")[1]["code"] == 1002
    assert admin.get(f"/api/users/{uid}/hosts") == []
    assert admin.post(f"/api/users/{uid}/hosts/{host}", {}) == [host]
    create_vm(user, host, "grant1")
    assert admin.delete(f"/api/users/{uid}/hosts/{host}") == []
    status, body = user.call("POST", f"/api/client/create/{host}", {"vm_uuid": "grant2"} | VM)
    assert (status, body["code"]) == (403, 403), body
    assert user.get(f"/api/client/detail/{host}/grant1")["vm_uuid"] == "grant1", "existing VMs stay usable"
    status, body = user.call("POST", f"/api/users/{uid}/hosts/{host}", {})
    assert status == 403, "a user granted a host to themselves"
    user.run_task("DELETE", f"/api/client/delete/{host}/grant1")
    admin.delete(f"/api/users/{uid}")


def test_per_vm_maxima_hold_for_admins_and_the_api_token(admin: ApiClient, host: str) -> None:
    api = admin.with_token(admin.get("/api/token/current")["token"])
    for client, spec in ((admin, {"cpu_num": 65}), (api, {"ram_num": 262145}), (admin, {"hdd_num": 4097})):
        status, body = client.call("POST", f"/api/client/create/{host}", {"vm_uuid": "max1"} | VM | spec,
                                   params={"wait": "0"})
        assert (status, body["code"]) == (400, 400), (spec, body)
        assert admin.call("GET", f"/api/client/detail/{host}/max1")[1]["code"] == 1002
    old = set_settings(admin, max_vm_cpu_num=2, max_vm_hdd_num=20)
    try:
        create_vm(admin, host, "max2", cpu_num=2, hdd_num=20)
        status, body = admin.call("PUT", f"/api/client/update/{host}/max2", {"cpu_num": 3})
        assert (status, body["code"]) == (400, 400), body
        status, body = admin.call("POST", f"/api/client/hdd/mount/{host}/max2", {"hdd_name": "d1", "hdd_size": 21})
        assert (status, body["code"]) == (400, 400), body
        assert admin.get(f"/api/client/detail/{host}/max2")["cpu_num"] == 2
    finally:
        admin.post("/api/system/settings", old)
    admin.run_task("DELETE", f"/api/client/delete/{host}/max2")


def test_proxy_domains_of_another_tenant_and_outside_the_allowed_suffixes(
        admin: ApiClient, fake_host: str, server: LiveServer) -> None:
    users = [new_user(admin, server) for _ in range(2)]
    for uid, _client, _ in users:
        grant(admin, uid, fake_host)
    (_, a, _), (_, b, _) = users
    create_vm(a, fake_host, "pxa", os_name="fakeos-1.0", ram_num=64, hdd_num=1)
    create_vm(b, fake_host, "pxb", os_name="fakeos-1.0", ram_num=64, hdd_num=1)
    a.post(f"/api/client/proxys/create/{fake_host}/pxa", {"domain": "shop.tenant-a.example"})
    for taken in ("x.shop.tenant-a.example", "tenant-a.example"):
        status, body = b.call("POST", f"/api/client/proxys/create/{fake_host}/pxb", {"domain": taken})
        assert (status, body["code"]) == (403, 403), (taken, body)
    a.post(f"/api/client/proxys/create/{fake_host}/pxa", {"domain": "api.shop.tenant-a.example"})  # own: fine
    old = set_settings(admin, proxy_domain_suffixes="vps.example.net")
    try:
        status, body = b.call("POST", f"/api/client/proxys/create/{fake_host}/pxb", {"domain": "www.google.com"})
        assert (status, body["code"]) == (403, 403), body
        b.post(f"/api/client/proxys/create/{fake_host}/pxb", {"domain": "b.vps.example.net"})
        admin.post(f"/api/client/proxys/create/{fake_host}/pxb", {"domain": "www.b-shop.example"})  # admins: any
    finally:
        admin.post("/api/system/settings", old)
    assert [p["domain"] for p in b.get(f"/api/client/proxys/detail/{fake_host}/pxb")] == [
        "b.vps.example.net", "www.b-shop.example"]
    for uid, client, _ in users:
        admin.run_task("DELETE", f"/api/client/delete/{fake_host}/px{'a' if client is a else 'b'}")
        admin.delete(f"/api/users/{uid}")


def test_lan_addr_of_a_customer_is_one_of_the_vms_own(admin: ApiClient, host: str, server: LiveServer) -> None:
    uid, user, _ = new_user(admin, server)
    grant(admin, uid, host)
    create_vm(user, host, "lan1")
    status, body = user.call("POST", f"/api/client/natadd/{host}/lan1",
                             {"host_port": 20005, "vm_port": 22, "lan_addr": "10.66.0.9"})
    assert (status, body["code"]) == (403, 403), body
    assert user.get(f"/api/client/natget/{host}/lan1") == []
    rule = user.post(f"/api/client/natadd/{host}/lan1", {"host_port": 20006, "vm_port": 22, "lan_addr": "10.9.0.2"})
    assert rule["lan_addr"] == "10.9.0.2"  # the VM's own address (as its engine reports it)
    user.run_task("DELETE", f"/api/client/delete/{host}/lan1")
    admin.delete(f"/api/users/{uid}")


# ---------------------------------------------------------------------- logins


def test_an_account_lock_does_not_stop_the_right_password_from_elsewhere(admin: ApiClient, server: LiveServer) -> None:
    uid, _user, name = new_user(admin, server)
    guesser, owner = client_from(server, "127.0.0.31"), client_from(server, "127.0.0.32")
    answers = [guesser.post("/login", json={"username": name, "password": f"x{i}"}).json()["code"] for i in range(6)]
    assert answers[:4] == [2003] * 4 and answers[-1] == 2004, answers
    r = guesser.post("/login", json={"username": name, "password": "pw-" + name})
    assert r.json()["code"] == 2004, "the guessing address got in during the lock"
    r = owner.post("/login", json={"username": name, "password": "pw-" + name})
    assert r.status_code == 200 and r.json()["data"]["username"] == name, r.text
    logs = admin.get("/api/system/logger/detail", params={"limit": 50})
    assert any(e["action"] == "login.locked" and e["source_ip"] == "127.0.0.31" for e in logs), logs[:5]
    admin.delete(f"/api/users/{uid}")


def test_failures_from_one_address_lock_that_address(admin: ApiClient, server: LiveServer) -> None:
    uid, _user, name = new_user(admin, server)
    old = set_settings(admin, login_address_max_failures=3)
    try:
        spray = client_from(server, "127.0.0.41")
        codes = [spray.post("/login", json={"username": f"nobody{i}", "password": "x"}).json()["code"]
                 for i in range(3)]
        assert codes == [2002, 2002, 2002], codes  # the third failure starts the lock
        r = spray.post("/login", json={"username": name, "password": "pw-" + name})
        assert (r.status_code, r.json()["code"]) == (429, 2004), r.text
        # bad API-token logins count the same, and stop writing audit entries once locked
        bot = client_from(server, "127.0.0.42")
        codes = [bot.post("/login", json={"login_type": "token", "token": f"idcs_wrong{i}"}).json()["code"]
                 for i in range(10)]
        assert codes[:3] == [3001] * 3 and set(codes[3:]) == {2004}, codes
        logs = admin.get("/api/system/logger/detail", params={"limit": 200})
        assert sum(e["detail"] == "wrong API token" and e["source_ip"] == "127.0.0.42" for e in logs) == 3
        assert client_from(server, "127.0.0.43").post("/login", json={"username": name, "password": "pw-" + name}
                                                      ).status_code == 200
    finally:
        admin.post("/api/system/settings", old)
    admin.delete(f"/api/users/{uid}")


def test_temp_login_exchanges_only_a_temp_token_and_only_once(admin: ApiClient, host: str,
                                                              server: LiveServer) -> None:
    uid, owner, _ = new_user(admin, server)
    grant(admin, uid, host)
    create_vm(owner, host, "tl1")
    temp = admin.get(f"/api/client/temptoken/{host}/tl1")
    c = server.client()
    landing = httpx.get(server.url + "/api/client/templogin", params={"token": temp["temp_token"]}, verify=False)
    assert landing.status_code == 303, landing.text  # lands on the panel's page of the VM
    first = dict(parse_qsl(landing.headers["location"].partition("#")[2]))
    session_expire = jwt.decode(first["temp"], options={"verify_signature": False})["exp"]
    assert first["vm"] == "tl1" and session_expire <= temp["expire"], (first, temp)
    for token in (temp["temp_token"], first["temp"], owner.token):  # used up / a session / a login session
        status, body = c.call("GET", "/api/client/templogin", params={"token": token})
        assert status == 401, body
    assert server.client(first["temp"]).get(f"/api/client/detail/{host}/tl1")["vm_uuid"] == "tl1"
    owner.run_task("DELETE", f"/api/client/delete/{host}/tl1")
    admin.delete(f"/api/users/{uid}")


# ---------------------------------------------------------------------- the low items


def test_login_names_are_not_logged_as_typed(admin: ApiClient, server: LiveServer) -> None:
    forged = "ghost\r\n2026-01-01 INFO idcs: admin login success\x1b[31m<script>"
    c = client_from(server, "127.0.0.51")
    assert c.post("/login", json={"username": forged, "password": "x"}).json()["code"] == 2002
    assert c.post("/login", json={"username": "Hunter2-secret-pw", "password": "x"}).json()["code"] == 2002
    logs = admin.get("/api/system/logger/detail", params={"limit": 20})
    text = repr(logs)
    assert "ghost" not in text and "Hunter2-secret-pw" not in text, [e for e in logs if e["source_ip"]][:3]
    mine = [e for e in logs if e["source_ip"] == "127.0.0.51"]
    assert len(mine) == 2 and all(e["target"] == "(unknown user)" for e in mine), mine


def test_secrets_are_never_taken_from_the_query_string(admin: ApiClient, server: LiveServer) -> None:
    uid, user, name = new_user(admin, server)
    c = client_from(server, "127.0.0.52")
    r = c.post("/login", json={"username": name}, params={"password": "pw-" + name})
    assert (r.status_code, r.json()["code"]) == (400, 400), r.text
    status, body = user.call("POST", "/api/users/change-password", {}, params={
        "old_password": "pw-" + name, "new_password": "new-pw-123"})
    assert (status, body["code"]) == (400, 400), body
    user.login(name, "pw-" + name)  # unchanged
    admin.delete(f"/api/users/{uid}")


def test_unicode_digits_and_racing_update_and_delete_are_not_500(admin: ApiClient, host: str) -> None:
    for path in (f"/api/client/natdel/{host}/x/%C2%B9", f"/api/client/ipaddr/delete/{host}/x/%D9%A3",
                 "/api/users/%C2%B2"):
        status, body = admin.call("DELETE", path)
        assert (status, body["code"]) == (400, 400), (path, body)

    def race(i: int) -> set[int]:
        uid = admin.post("/api/users", {"username": f"race{next(_n)}", "password": "pw-123456",
                                        "email": "r@example.com"})["id"]
        with ThreadPoolExecutor(2) as pool:
            put = pool.submit(admin.call, "PUT", f"/api/users/{uid}", {"email": f"r{i}@example.com",
                                                                       "quota": {"max_vms": 1}})
            dele = pool.submit(admin.call, "DELETE", f"/api/users/{uid}")
            return {put.result()[0], dele.result()[0]}

    statuses = set().union(*(race(i) for i in range(12)))
    assert 500 not in statuses, statuses


def test_a_new_server_addr_needs_the_password_again(admin: ApiClient, host: str) -> None:
    before = admin.get(f"/api/server/detail/{host}")["server_addr"]
    status, body = admin.call("PUT", f"/api/server/update/{host}", {"server_addr": "lab://elsewhere"})
    assert (status, body["code"]) == (400, 400), body
    assert admin.get(f"/api/server/detail/{host}")["server_addr"] == before


def test_headers_on_docs_and_allow_on_405(server: LiveServer) -> None:
    r = httpx.get(f"{server.url}/docs")
    assert r.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in r.headers  # plain HTTP: HSTS only over TLS
    r = httpx.put(f"{server.url}/login")
    assert r.status_code == 405 and r.headers["allow"] == "POST", r.headers
    r = httpx.post(f"{server.url}/api/users/7")
    assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "PUT", "DELETE"}


def test_user_names_are_unique_without_regard_to_case(admin: ApiClient) -> None:
    name = f"CaseUser{next(_n)}"
    uid = admin.post("/api/users", {"username": name, "password": "pw-123456", "email": "c@example.com"})["id"]
    _status, body = admin.call("POST", "/api/users", {"username": name.lower(), "password": "pw-123456",
                                                     "email": "c@example.com"})
    assert body["code"] == 2001, body
    admin.delete(f"/api/users/{uid}")


def test_the_schema_states_the_limits(server: LiveServer) -> None:
    doc = httpx.get(f"{server.url}/openapi.json").json()
    schemas = doc["components"]["schemas"]
    quota = schemas["QuotaBody"]["properties"]["max_vms"]["anyOf"][0]
    assert quota["maximum"] == 2**31 - 1, quota
    assert schemas["VMCreate"]["properties"]["flu_num"]["anyOf"][0]["maximum"] == 2**31 - 1
    assert "pattern" in schemas["VMCreate"]["properties"]["vm_uuid"]["anyOf"][0]
    grants = doc["paths"]["/api/users/{user_id}/hosts/{hs_name}"]
    assert set(grants) == {"post", "delete"}
    assert "max_vm_cpu_num" in doc["info"]["description"]
