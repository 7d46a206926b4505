"""The billing modules' dialect, sent exactly as they send it, through a real server over
HTTPS against a real Docker Engine; and the same life cycle in the contract's vocabulary."""

from __future__ import annotations

import random
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
import pytest

from idcs_core.testing.server import ADMIN_PASSWORD, LiveServer

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def strict(resp: httpx.Response) -> dict[str, Any]:
    """Decode as the Go client does: integer code, integer or absent timestamp, string msg."""
    body = orjson.loads(resp.content)
    assert isinstance(body, dict), body
    assert type(body["code"]) is int, body
    assert isinstance(body["msg"], str), body
    assert "timestamp" not in body or type(body["timestamp"]) is int, body
    return body


class Billing:
    """A billing module: only the global API token, JSON bodies, form-encoded GET/DELETE."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(base_url=url, verify=False, timeout=120,
                                 headers={"Authorization": f"Bearer {token}"})

    def call(self, method: str, path: str, json: Any = None, form: bool = False, **kw: Any) -> dict[str, Any]:
        if form:
            resp = self.http.request(method, path, content=b"", headers=FORM, **kw)
        else:
            resp = self.http.request(method, path, json=json, **kw)
        return strict(resp)

    def ok(self, method: str, path: str, json: Any = None, form: bool = False, **kw: Any) -> Any:
        body = self.call(method, path, json, form, **kw)
        assert body["code"] == 200, (method, path, body)
        return body["data"]


@pytest.fixture(scope="module")
def world(oci_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("billing")
    with LiveServer(Path(folder), subprocess_mode=True, tls=True, env={"IDCS_LOAD_ENGINES": "OCInterface"}) as srv:
        admin = srv.admin()
        token = admin.get("/api/token/current")["token"]
        base = random.randrange(31000, 39000, 100)
        spec = oci_backend.host_spec()
        yield {"server": srv, "token": token, "ports": (base, base + 20), "addr": spec.addr,
               "options": spec.options, "image": oci_backend.image, "docker": oci_backend.client()}


def http_body(port: int) -> str:
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_billing_session_with_the_api_token(world: dict[str, Any]) -> None:
    b = Billing(world["server"].url, world["token"])
    assert b.ok("GET", "/api/server/status", form=True)["status"] == "online"   # connection test
    start, close = world["ports"]
    b.ok("POST", "/api/server/create", {
        "server_name": "dock1", "server_type": "OCInterface", "server_addr": world["addr"], "server_user": "",
        "server_pass": "", "server_area": "HK", "options": world["options"],
        "config": {"ports_start": start, "ports_close": close, "public_addr": "127.0.0.1",
                   "server_plan": [{"name": "S", "cpu": 1, "mem": 256}]}})
    hosts = b.ok("GET", "/api/server/detail", form=True)
    assert isinstance(hosts, dict) and hosts["dock1"]["server_name"] == "dock1"
    assert hosts["dock1"]["status"] == "online" and hosts["dock1"]["server_area"] == "HK"
    assert hosts["dock1"]["config"]["ports_start"] == start
    ports = b.ok("GET", "/api/server/ports/dock1", form=True)
    assert (ports["ports_start"], ports["ports_close"], ports["public_addr"]) == (start, close, "127.0.0.1")
    assert ports["available_ports"] == list(range(start, close + 1)) and ports["available_count"] == close - start + 1
    assert b.ok("GET", "/api/server/plans/dock1", form=True)[0]["name"] == "S"

    created = b.ok("POST", "/api/client/create/dock1", {
        "vm_name": "cust42", "os_name": world["image"], "cpu_num": 1, "mem_num": 256, "hdd_num": 1,
        "os_pass": "Init-Pass-1", "vc_pass": "vnc-pass", "vc_port": 0,
        "nic_all": {"nic0": {"nic_type": "nat", "mac_addr": "", "ip4_addr": "", "ip6_addr": ""}},
        "cpu_per": 50, "speed_u": 10, "speed_d": 20, "flu_num": 100, "nat_num": 2, "web_num": 0})
    vm = created["vm_uuid"]
    assert vm.startswith("cust42-") and created["task"]["state"] == "success"   # the API token waits
    detail = b.ok("GET", f"/api/client/detail/dock1/{vm}", form=True)
    assert detail["mem_num"] == 256 and detail["config"]["nat_num"] == 2 and detail["config"]["speed_d"] == 20
    assert "Init-Pass-1" not in str(detail) and "vnc-pass" not in str(detail)

    b.ok("PUT", f"/api/client/update/dock1/{vm}", {"password": "Changed-Pass-2"})
    rule = b.ok("POST", f"/api/client/natadd/dock1/{vm}", {"wan_port": "", "lan_port": 80, "lan_addr": "",
                                                            "protocol": "tcp", "nat_tips": "web"})
    assert start <= rule["wan_port"] <= close and rule["nat_tips"] == "web"
    assert "hello from idcs-test" in http_body(rule["wan_port"])  # the image's httpd, through the forward
    assert b.ok("GET", "/api/nat/check", form=True, params={"port": rule["wan_port"]})["available"] is False
    rules = b.ok("GET", f"/api/client/natget/dock1/{vm}", form=True)
    assert [(r["rule_index"], r["wan_port"], r["lan_port"], r["protocol"]) for r in rules] == [
        (rule["rule_index"], rule["wan_port"], 80, "tcp")]
    b.ok("POST", f"/api/client/natadd/dock1/{vm}", {"wan_port": 0, "lan_port": 22, "protocol": "tcp"})
    over = b.call("POST", f"/api/client/natadd/dock1/{vm}", {"wan_port": 0, "lan_port": 23, "protocol": "tcp"})
    assert over["code"] == 4001                                                # nat_num = 2 per VM
    b.ok("DELETE", f"/api/client/natdel/dock1/{vm}/{rule['rule_index']}", form=True)
    assert len(b.ok("GET", f"/api/client/natget/dock1/{vm}", form=True)) == 1

    reinstalled = b.ok("POST", f"/api/client/reinstall/dock1/{vm}", {"os_name": world["image"],
                                                                    "os_pass": "Reinstall-3"})
    assert reinstalled["task"]["state"] == "success"
    assert b.ok("POST", f"/api/client/powers/dock1/{vm}", {"action": "S_PAUSE"})["status"] == "paused"   # suspend
    assert b.ok("POST", f"/api/client/powers/dock1/{vm}", {"action": "S_RESUME"})["status"] == "running"
    status = b.ok("GET", f"/api/client/status/dock1/{vm}", form=True, params={"limit": 30})
    assert status["power_status"] == "running" and isinstance(status["history"], list) and status["history"]

    backup = b.ok("POST", f"/api/client/backup/create/dock1/{vm}", {"vm_tips": "before upgrade"})
    listed = b.ok("GET", f"/api/client/backup/detail/dock1/{vm}", form=True)
    assert [(x["vm_back"], x["vm_tips"]) for x in listed] == [(backup["vm_back"], "before upgrade")]
    b.ok("DELETE", f"/api/client/backup/delete/dock1/{vm}", {"vm_back": backup["vm_back"]})
    assert b.ok("POST", "/api/traffic/reset", {"server_name": "dock1", "vm_uuid": vm})["traffic_bytes"] == 0

    stats = b.ok("GET", "/api/system/statis", form=True)
    assert stats["running_vm_count"] >= 1 and isinstance(stats["vms_count"], int)
    b.ok("POST", "/api/server/powers/dock1", {"enable": False})               # closed for new VMs
    refused = b.call("POST", "/api/client/create/dock1", {"vm_name": "x", "os_name": world["image"],
                                                          "cpu_num": 1, "mem_num": 64, "hdd_num": 0})
    assert refused["code"] == 400 and "closed" in refused["msg"]
    b.ok("POST", "/api/server/powers/dock1", {"enable": "1"})

    b.ok("DELETE", f"/api/client/delete/dock1/{vm}", form=True)               # terminate
    assert b.call("GET", f"/api/client/detail/dock1/{vm}", form=True)["code"] == 1002
    assert vm not in [c.name for c in world["docker"].containers.list(all=True)]


def test_temp_token_opens_one_vm_and_nothing_else(world: dict[str, Any]) -> None:
    b = Billing(world["server"].url, world["token"])
    if "dock1" not in b.ok("GET", "/api/server/detail", form=True):
        test_billing_session_with_the_api_token(world)
    one = b.ok("POST", "/api/client/create/dock1", {"vm_name": "one", "os_name": world["image"], "cpu_num": 1,
                                                     "mem_num": 64, "hdd_num": 0})["vm_uuid"]
    two = b.ok("POST", "/api/client/create/dock1", {"vm_name": "two", "os_name": world["image"], "cpu_num": 1,
                                                     "mem_num": 64, "hdd_num": 0})["vm_uuid"]
    temp = b.ok("GET", f"/api/client/temptoken/dock1/{one}", form=True)
    assert isinstance(temp["expire"], int) and temp["expire"] > time.time()
    anon = httpx.Client(base_url=world["server"].url, verify=False)
    landing = anon.get("/api/client/templogin", params={"token": temp["temp_token"]})
    assert landing.status_code == 303                          # the browser lands on the panel's page of the VM
    path, _, fragment = landing.headers["location"].partition("#")
    session = dict(parse_qsl(fragment))
    assert path == "/" and session["hs"] == "dock1" and session["vm"] == one
    # the temporary token is used up; the session it gave reaches that VM only
    assert strict(anon.get("/api/client/templogin", params={"token": temp["temp_token"]}))["code"] == 3001
    customer = Billing(world["server"].url, session["temp"])
    assert customer.ok("GET", f"/api/client/detail/dock1/{one}")["vm_uuid"] == one
    assert customer.ok("POST", f"/api/client/powers/dock1/{one}", {"action": "stop"})["status"] == "stopped"
    assert [v["vm_uuid"] for v in customer.ok("GET", "/api/client/detail/dock1")] == [one]
    me = customer.ok("GET", "/api/users/current")
    assert me["is_admin"] is False and me["scope_vm_id"] is not None
    for method, path in [("GET", f"/api/client/detail/dock1/{two}"), ("POST", f"/api/client/powers/dock1/{two}"),
                         ("GET", "/api/users"), ("GET", "/api/server/detail"),
                         ("DELETE", f"/api/client/delete/dock1/{one}"), ("GET", "/api/token/current")]:
        body = customer.call(method, path, {"action": "S_START"} if method == "POST" else None)
        assert body["code"] == 403, (method, path, body)
    for vm in (one, two):
        b.ok("DELETE", f"/api/client/delete/dock1/{vm}", form=True)


@pytest.mark.parametrize("vocabulary", ["contract", "billing"])
def test_same_life_cycle_in_both_vocabularies(world: dict[str, Any], vocabulary: str) -> None:
    """Create → power → NAT → backup → delete, once in API.md's words, once in the dialect's."""
    srv: LiveServer = world["server"]
    c = httpx.Client(base_url=srv.url, verify=False, timeout=120)
    login = "/login" if vocabulary == "contract" else "/api/login"
    body = {"username": "admin", "password": ADMIN_PASSWORD} | ({"login_type": "user"} if login != "/login" else {})
    token = strict(c.post(login, json=body))["data"]["token"]
    c.headers["Authorization"] = f"Bearer {token}"
    hosts = strict(c.get("/api/server/detail"))["data"]
    if vocabulary == "contract":
        assert isinstance(hosts, list)
        names = [h["server_name"] for h in hosts]
    else:
        assert isinstance(hosts, dict)
        names = list(hosts)
    if "dock1" not in names:
        Billing(srv.url, world["token"]).ok("POST", "/api/server/create", {
            "server_name": "dock1", "server_type": "OCInterface", "server_addr": world["addr"], "server_user": "",
            "server_pass": "", "options": world["options"],
            "config": {"ports_start": world["ports"][0], "ports_close": world["ports"][1]}})

    def ok(resp: httpx.Response) -> Any:
        data = strict(resp)
        assert data["code"] == 200, data
        return data["data"]

    def wait(started: dict[str, Any]) -> None:
        task = ok(c.get(f"/api/tasks/{started['task_id']}", params={"wait": 120}))
        assert task["state"] == "success", task

    vm = f"life-{vocabulary}"
    if vocabulary == "contract":
        wait(ok(c.post("/api/client/create/dock1", json={"vm_uuid": vm, "os_name": world["image"], "cpu_num": 1,
                                                          "ram_num": 128, "hdd_num": 0})))
        words = {"off": "H_CLOSE", "on": "S_START", "pause": "S_PAUSE", "reset": "S_RESET"}
        nat = {"host_port": world["ports"][0] + 15, "vm_port": 80, "protocol": "tcp"}
    else:
        created = ok(c.post("/api/client/create/dock1", json={"vm_name": vm, "os_name": world["image"],
                                                               "cpu_num": 1, "mem_num": 128, "hdd_num": 0}))
        wait(created)
        vm = created["vm_uuid"]
        words = {"off": "hard_stop", "on": "start", "pause": "pause", "reset": "hard_reset"}
        nat = {"wan_port": world["ports"][0] + 16, "lan_port": 80, "protocol": "tcp", "port_tips": "x"}
    for word, expected in [("off", "stopped"), ("on", "running"), ("pause", "paused"), ("reset", "running")]:
        assert ok(c.post(f"/api/client/powers/dock1/{vm}", json={"action": words[word]}))["status"] == expected
    rule = ok(c.post(f"/api/client/natadd/dock1/{vm}", json=nat))
    assert http_body(rule["host_port"])
    started = ok(c.post(f"/api/client/backup/create/dock1/{vm}", json={"description": "d"}))
    wait(started)
    wait(ok(c.delete(f"/api/client/delete/dock1/{vm}")))
    assert strict(c.get(f"/api/client/detail/dock1/{vm}"))["code"] == 1002
    if vocabulary == "billing":
        assert strict(c.get("/api/logout"))["code"] == 200
    else:
        assert strict(c.post("/logout"))["code"] == 200
    assert strict(c.get("/api/users/current"))["code"] == 3001
