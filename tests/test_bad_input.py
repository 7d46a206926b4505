"""Bad input gets 400 in the envelope and changes nothing: not the database, not the engine."""

from __future__ import annotations

import pytest
from helpers import create_vm
from testlab import TestLabEngine

from idcs_core.testing.server import ApiClient

BAD_NAMES = ["../etc", "a/../b", "a;rm -rf", "a'b", 'a"b', "a b", "a\x00b", "a\u202eb", "a\nb", "-leading",
             "..", "x" * 65, "a`id`", "a$(id)", "ä"]
GOOD_VM = {"vm_uuid": "ok1", "os_name": "ubuntu-22.04", "cpu_num": 1, "ram_num": 512, "hdd_num": 10}


READS = {"host_status", "vm_list", "vm_status", "os_images", "vm_ip_list", "backup_list"}


def snapshot(admin: ApiClient, lab: TestLabEngine, host: str) -> tuple:
    """What the API shows, and every changing call the engine has received."""
    lab_host = lab.hosts.get(f"lab://{host}")
    changes = [c for c in lab_host.calls if c not in READS] if lab_host else []
    return (str(admin.get("/api/server/detail")), str(admin.get(f"/api/client/detail/{host}")),
            str(admin.get("/api/users")), changes, sorted(lab_host.vms) if lab_host else [])


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unsafe_vm_names_are_refused_before_the_engine(admin: ApiClient, host: str, lab: TestLabEngine,
                                                       name: str) -> None:
    vms_before = sorted(lab.hosts[f"lab://{host}"].vms) if f"lab://{host}" in lab.hosts else []
    status, body = admin.call("POST", f"/api/client/create/{host}", GOOD_VM | {"vm_uuid": name})
    assert (status, body["code"]) == (400, 400), body
    assert "vm_uuid" in body["msg"]
    assert admin.get(f"/api/client/detail/{host}") == []
    assert (sorted(lab.hosts[f"lab://{host}"].vms) if f"lab://{host}" in lab.hosts else []) == vms_before


def test_slashes_in_path_names_never_match_a_route(admin: ApiClient, host: str) -> None:
    # %2F decodes to "/" before routing: the path has more segments and matches no route
    status, body = admin.call("GET", f"/api/client/detail/{host}/..%2F..%2Fetc")
    assert (status, body["code"], body["msg"]) == (404, 404, "no such route")


@pytest.mark.parametrize("name", ["a%3Bb", "a%27b", "a%22b", "a%20b", "a%00b", "a%60id%60"])
def test_unsafe_names_in_paths(admin: ApiClient, host: str, name: str) -> None:
    status, body = admin.call("GET", f"/api/client/detail/{host}/{name}")
    assert (status, body["code"]) == (400, 400), body
    status, body = admin.call("POST", f"/api/client/powers/{name}/x", {"action": "S_START"})
    assert (status, body["code"]) == (400, 400), body


@pytest.mark.parametrize("field,value", [
    ("cpu_num", "two"), ("cpu_num", 2.5), ("cpu_num", 0), ("cpu_num", -1), ("cpu_num", None),
    ("ram_num", "lots"), ("ram_num", 1), ("hdd_num", -5), ("hdd_num", [1]), ("os_name", "../../etc/passwd"),
    ("os_name", "/abs/path"), ("os_name", "img;reboot"), ("os_name", 5), ("cpu_num", 10**12),
    ("cpu_num", True), ("ram_num", False), ("hdd_num", True),
])
def test_wrong_types_and_ranges(admin: ApiClient, host: str, lab: TestLabEngine, field: str, value: object) -> None:
    before = snapshot(admin, lab, host)
    status, body = admin.call("POST", f"/api/client/create/{host}", GOOD_VM | {field: value})
    assert (status, body["code"]) == (400, 400), body
    assert field in body["msg"]
    assert snapshot(admin, lab, host) == before


@pytest.mark.parametrize("missing", ["os_name", "cpu_num", "ram_num", "hdd_num"])
def test_missing_fields(admin: ApiClient, host: str, missing: str) -> None:
    body = {k: v for k, v in GOOD_VM.items() if k != missing}
    status, data = admin.call("POST", f"/api/client/create/{host}", body)
    assert (status, data["code"]) == (400, 400)
    assert missing in data["msg"] and "required" in data["msg"].lower()


def test_not_json_and_not_an_object(admin: ApiClient, host: str) -> None:
    for raw in (b"{not json", b"[1,2]", b'"str"', b"\xff\xfe"):
        status, body = admin.call("POST", f"/api/client/create/{host}", content=raw,
                                  headers={"Content-Type": "application/json"})
        assert (status, body["code"]) == (400, 400), raw


def test_huge_body(admin: ApiClient, host: str, lab: TestLabEngine) -> None:
    before = snapshot(admin, lab, host)
    status, body = admin.call("POST", f"/api/client/create/{host}", GOOD_VM | {"pad": "x" * (2 * 1024 * 1024)})
    assert (status, body["code"]) == (400, 400)
    assert "too large" in body["msg"]
    # chunked, without Content-Length
    def chunks():
        for _ in range(40):
            yield b"x" * 65536
    status, body = admin.call("POST", f"/api/client/create/{host}", content=chunks(),
                              headers={"Content-Type": "application/json"})
    assert (status, body["code"]) == (400, 400)
    assert snapshot(admin, lab, host) == before


@pytest.mark.parametrize("text", ["bad\x07bell", "new\nline", "rtl\u202eoverride", "nul\x00"])
def test_control_characters_in_free_text(admin: ApiClient, host: str, text: str) -> None:
    create_vm(admin, host, "t1")
    status, body = admin.call("POST", f"/api/client/backup/create/{host}/t1", {"description": text})
    assert (status, body["code"]) == (400, 400)
    assert admin.get(f"/api/client/backup/detail/{host}/t1") == []


@pytest.mark.parametrize("body", [
    {"server_name": "h;1", "server_type": "TestLab", "server_addr": "lab://x", "server_user": "u", "server_pass": "p"},
    {"server_name": "h1", "server_type": "TestLab", "server_addr": "lab://x; reboot", "server_user": "u",
     "server_pass": "p"},
    {"server_name": "h1", "server_type": "TestLab", "server_addr": "unix:///../../etc/x", "server_user": "u",
     "server_pass": "p"},
    {"server_name": "h1", "server_type": "NoSuchEngine", "server_addr": "lab://x", "server_user": "u",
     "server_pass": "p"},
    {"server_name": "h1", "server_type": "TestLab", "server_addr": "lab://x", "server_user": "u"},
    {"server_name": "h1", "server_type": "TestLab", "server_addr": "lab://x", "server_user": "u", "server_pass": "p",
     "ports_start": 3000, "ports_close": 2000},
    {"server_name": "h1", "server_type": "TestLab", "server_addr": "lab://x", "server_user": "root'; rm -rf / #",
     "server_pass": "p"},
    {"server_name": "h1", "server_type": "TestLab", "server_addr": "lab://x", "server_user": "a b", "server_pass": "p"},
])
def test_bad_hosts(admin: ApiClient, body: dict) -> None:
    before = admin.get("/api/server/detail")
    status, data = admin.call("POST", "/api/server/create", body)
    assert (status, data["code"]) == (400, 400), data
    assert admin.get("/api/server/detail") == before


@pytest.mark.parametrize("body", [
    {"host_port": 70000, "vm_port": 80}, {"host_port": 80, "vm_port": 0}, {"host_port": 80, "vm_port": 22,
                                                                            "protocol": "icmp"},
    {"host_port": "eighty", "vm_port": 22}, {"host_port": 20001}, {"host_port": 20001, "vm_port": 22,
                                                                   "nat_tips": "x\x1b[31m"},
])
def test_bad_nat_rules(admin: ApiClient, host: str, body: dict) -> None:
    create_vm(admin, host, "n1")
    status, data = admin.call("POST", f"/api/client/natadd/{host}/n1", body)
    assert (status, data["code"]) == (400, 400), data
    assert admin.get(f"/api/client/natget/{host}/n1") == []


def test_bad_users_and_settings(admin: ApiClient) -> None:
    users_before = admin.get("/api/users")
    for body in ({"username": "a b", "password": "x", "email": "a@example.com"},
                 {"username": "ok", "password": "", "email": "a@example.com"},
                 {"username": "ok", "password": "x", "email": "not-an-email"},
                 {"username": "ok", "password": "x", "email": "a@example.com", "is_admin": "yes"}):
        status, data = admin.call("POST", "/api/users", body)
        assert (status, data["code"]) == (400, 400), (body, data)
    assert admin.get("/api/users") == users_before
    settings_before = admin.get("/api/system/settings")
    for body in ({"host_timeout": "soon"}, {"no_such_setting": 1}, {"panel_name": "ok", "host_timeout": -1}):
        status, data = admin.call("POST", "/api/system/settings", body)
        assert (status, data["code"]) == (400, 400), (body, data)
    assert admin.get("/api/system/settings") == settings_before


def test_a_wrong_method_answers_405_in_the_envelope(admin: ApiClient) -> None:
    status, body = admin.call("DELETE", "/api/system/engine")
    assert (status, body["code"]) == (405, 405), body
    assert body["msg"] == "method not allowed"


def test_passwords_are_taken_exactly_as_typed(admin: ApiClient, server: object) -> None:
    """Spaces around a password are part of it: the API must not trim what the CLI keeps."""
    user = admin.post("/api/users", {"username": "spacey", "password": "  two spaces  ", "email": "s@example.com"})
    try:
        client = server.client()  # type: ignore[attr-defined]
        _status, body = client.call("POST", "/login", {"username": "spacey", "password": "two spaces"})
        assert body["code"] == 2003, body
        client.login("spacey", "  two spaces  ")
        assert client.get("/api/users/current")["username"] == "spacey"
        client.close()
    finally:
        admin.delete(f"/api/users/{user['id']}")
