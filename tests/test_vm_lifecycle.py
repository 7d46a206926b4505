"""VM life cycle through the REST API with the TestLab engine: tasks, statuses, failures."""

from __future__ import annotations

import time

from helpers import create_vm
from testlab import TestLabEngine

from idcs_core.testing.server import ApiClient, LiveServer


def test_create_shows_creating_then_running(admin: ApiClient, host: str, lab: TestLabEngine) -> None:
    lab.faults.delay["vm_create"] = 0.8
    started = admin.post(f"/api/client/create/{host}", {"vm_uuid": "web1", "os_name": "ubuntu-22.04",
                                                        "cpu_num": 2, "ram_num": 1024, "hdd_num": 20})
    assert started["status"] == "creating"
    assert admin.get(f"/api/client/detail/{host}/web1")["status"] == "creating"
    # while the create task runs, a second long operation on the VM is refused
    status, body = admin.call("DELETE", f"/api/client/delete/{host}/web1")
    assert (status, body["code"]) == (409, 4002)
    task = admin.wait_task(started["task_id"])
    assert task["state"] == "success" and task["progress"] == 100
    vm = admin.get(f"/api/client/detail/{host}/web1")
    assert (vm["status"], vm["cpu_num"], vm["ram_num"], vm["mem_num"], vm["hdd_num"]) == ("running", 2, 1024, 1024, 20)
    assert vm["power_state"] == "lab-running"
    listed = admin.get(f"/api/client/detail/{host}")
    assert [v["vm_uuid"] for v in listed] == ["web1"]


def test_power_actions_change_status(admin: ApiClient, host: str) -> None:
    create_vm(admin, host, "p1")
    for action, expected in [("H_CLOSE", "stopped"), ("S_START", "running"), ("S_PAUSE", "paused"),
                             ("S_RESUME", "running"), ("S_RESET", "running"), ("hard_stop", "stopped"),
                             ("start", "running")]:
        data = admin.post(f"/api/client/powers/{host}/p1", {"action": action})
        assert data["status"] == expected, action
        assert admin.get(f"/api/client/detail/{host}/p1")["status"] == expected
    status, body = admin.call("POST", f"/api/client/powers/{host}/p1", {"action": "EXPLODE"})
    assert (status, body["code"]) == (400, 400)


def test_create_failure_leaves_nothing(admin: ApiClient, host: str, lab: TestLabEngine) -> None:
    lab.faults.fail["vm_create"] = "disk full on the back end"
    before = admin.get("/api/users/current")["quota"]["used_vms"]
    started = admin.post(f"/api/client/create/{host}", {"vm_uuid": "bad1", "os_name": "ubuntu-22.04",
                                                        "cpu_num": 1, "ram_num": 512, "hdd_num": 10})
    task = admin.wait_task(started["task_id"])
    assert task["state"] == "failed" and task["result"]["code"] == 1004
    assert "disk full on the back end" in task["message"]
    status, body = admin.call("GET", f"/api/client/detail/{host}/bad1")
    assert (status, body["code"]) == (404, 1002)
    assert admin.get("/api/users/current")["quota"]["used_vms"] == before


def test_waited_create_answers_the_task_error(admin: ApiClient, host: str) -> None:
    status, body = admin.call("POST", f"/api/client/create/{host}", {
        "vm_uuid": "noimg", "os_name": "vanished-image", "cpu_num": 1, "ram_num": 512, "hdd_num": 1},
        params={"wait": 30})
    assert (status, body["code"]) == (400, 400)
    assert "no image" in body["msg"]


def test_delete_failure_keeps_vm_with_real_status(admin: ApiClient, host: str, lab: TestLabEngine) -> None:
    create_vm(admin, host, "d1")
    admin.post(f"/api/client/powers/{host}/d1", {"action": "H_CLOSE"})
    lab.faults.fail["vm_delete"] = "device busy"
    started = admin.delete(f"/api/client/delete/{host}/d1")
    task = admin.wait_task(started["task_id"])
    assert task["state"] == "failed" and task["result"]["code"] == 1005
    vm = admin.get(f"/api/client/detail/{host}/d1")
    assert vm["status"] == "stopped"
    lab.faults.reset()
    admin.run_task("DELETE", f"/api/client/delete/{host}/d1")
    _status, body = admin.call("GET", f"/api/client/detail/{host}/d1")
    assert body["code"] == 1002


def test_unsupported_operation_is_1006(admin: ApiClient, host: str) -> None:
    create_vm(admin, host, "u1")
    # reverse proxies: served by the core's Caddy unless the host turns that off
    admin.put(f"/api/server/update/{host}", {"proxy_endpoint": "off"})
    for method, path, body in [("GET", f"/api/client/remote/{host}/u1", None),
                               ("POST", f"/api/client/proxys/create/{host}/u1", {"domain": "a.example.com"}),
                               ("POST", f"/api/server/powers/{host}", {"action": "restart"})]:
        status, data = admin.call(method, path, body)
        assert (status, data["code"]) == (501, 1006), (path, data)
        assert "not supported" in data["msg"]
    admin.put(f"/api/server/update/{host}", {"proxy_endpoint": "local"})


def test_host_unreachable_and_offline_listing(admin: ApiClient, lab: TestLabEngine, server: LiveServer) -> None:
    status, body = admin.call("POST", "/api/server/create", {"server_name": "nohost", "server_type": "TestLab",
                                                             "server_addr": "tcp://10.0.0.1", "server_user": "u",
                                                             "server_pass": "lab-pass"})
    assert (status, body["code"]) == (503, 1003)
    status, body = admin.call("POST", "/api/server/create", {"server_name": "badpw", "server_type": "TestLab",
                                                             "server_addr": "lab://badpw", "server_user": "u",
                                                             "server_pass": "wrong"})
    assert body["code"] == 1003 and "login failed" in body["msg"]
    assert all(h["server_name"] not in ("nohost", "badpw") for h in admin.get("/api/server/detail"))

    admin.post("/api/server/create", {"server_name": "hangs", "server_type": "TestLab", "server_addr": "lab://hangs",
                                      "server_user": "u", "server_pass": "lab-pass"})
    admin.post("/api/server/create", {"server_name": "fine", "server_type": "TestLab", "server_addr": "lab://fine",
                                      "server_user": "u", "server_pass": "lab-pass"})
    try:
        lab.faults.hang.add("lab://hangs")
        time.sleep(2.1)  # let the short status cache expire
        started = time.monotonic()
        hosts = {h["server_name"]: h for h in admin.get("/api/server/detail")}
        elapsed = time.monotonic() - started
        assert elapsed < server.host_timeout + 1.5
        assert hosts["hangs"]["status"] == "offline" and "did not answer" in hosts["hangs"]["error"]
        assert hosts["fine"]["status"] == "online" and hosts["fine"]["cpu_usage"] == 12.5
        assert "server_pass" not in hosts["fine"] and "lab-pass" not in str(hosts)
    finally:
        lab.faults.reset()
        admin.delete("/api/server/delete/hangs")
        admin.delete("/api/server/delete/fine")


def test_vm_routes_on_down_host_answer_1003_and_keep_records(admin: ApiClient, host: str, lab: TestLabEngine) -> None:
    create_vm(admin, host, "h1")
    lab.faults.down.add(f"lab://{host}")
    _status, body = admin.call("POST", f"/api/client/powers/{host}/h1", {"action": "H_CLOSE"})
    assert body["code"] == 1003
    listed = admin.get(f"/api/client/detail/{host}")
    assert listed[0]["vm_uuid"] == "h1" and listed[0]["power_state"] == "unknown"
    started = admin.delete(f"/api/client/delete/{host}/h1")
    assert admin.wait_task(started["task_id"])["state"] == "failed"
    lab.faults.reset()
    assert admin.get(f"/api/client/detail/{host}/h1")["status"] == "running"


def test_scan_imports_exactly_once(admin: ApiClient, host: str, lab: TestLabEngine) -> None:
    from testlab import LabVM

    from idcs_core.types import VMSpec

    lab.hosts.setdefault(f"lab://{host}", type(next(iter(lab.hosts.values())))() if lab.hosts else None)
    lab.hosts[f"lab://{host}"].vms["foreign1"] = LabVM(VMSpec("foreign1", "debian-12", 1, 256, 5), status="stopped")
    first = admin.post(f"/api/client/scaner/{host}")
    assert first["added"] == ["foreign1"]
    second = admin.post(f"/api/client/scaner/{host}")
    assert second["added"] == [] and second["total"] == 1
    vm = admin.get(f"/api/client/detail/{host}/foreign1")
    assert (vm["status"], vm["owner_id"], vm["os_name"]) == ("stopped", None, "debian-12")


def test_nat_rules_and_automatic_port(admin: ApiClient, host: str, lab: TestLabEngine) -> None:
    create_vm(admin, host, "n1")
    rule = admin.post(f"/api/client/natadd/{host}/n1", {"host_port": 20005, "vm_port": 22, "protocol": "tcp"})
    assert (rule["rule_index"], rule["host_port"], rule["lan_addr"]) == (0, 20005, "10.9.0.2")
    auto = admin.post(f"/api/client/natadd/{host}/n1", {"wan_port": 0, "lan_port": 80, "protocol": "tcp"})
    assert auto["host_port"] == 20000 and auto["wan_port"] == 20000 and auto["rule_index"] == 1
    status, body = admin.call("POST", f"/api/client/natadd/{host}/n1", {"host_port": 20005, "vm_port": 23})
    assert (status, body["code"]) == (409, 4002)
    assert lab.hosts[f"lab://{host}"].vms["n1"].nat == {(20005, "tcp"), (20000, "tcp")}
    lab.faults.fail["nat_add"] = "iptables exploded"
    status, body = admin.call("POST", f"/api/client/natadd/{host}/n1", {"host_port": 20007, "vm_port": 24})
    assert body["code"] == 1005
    lab.faults.reset()
    assert [r["host_port"] for r in admin.get(f"/api/client/natget/{host}/n1")] == [20005, 20000]
    admin.delete(f"/api/client/natdel/{host}/n1/0")
    remaining = admin.get(f"/api/client/natget/{host}/n1")
    assert [(r["rule_index"], r["host_port"]) for r in remaining] == [(1, 20000)]
    assert lab.hosts[f"lab://{host}"].vms["n1"].nat == {(20000, "tcp")}


def test_backup_restore_delete(admin: ApiClient, host: str, lab: TestLabEngine) -> None:
    create_vm(admin, host, "b1")
    vm = lab.hosts[f"lab://{host}"].vms["b1"]
    vm.files["/data"] = "before"
    started = admin.post(f"/api/client/backup/create/{host}/b1", {"description": "nightly"})
    assert admin.wait_task(started["task_id"])["state"] == "success"
    name = started["backup_name"]
    vm.files["/data"] = "after"
    admin.run_task("POST", f"/api/client/backup/restore/{host}/b1", {"backup_name": name})
    assert vm.files["/data"] == "before"
    backups = admin.get(f"/api/client/backup/detail/{host}/b1")
    assert [(b["backup_name"], b["description"], b["status"]) for b in backups] == [(name, "nightly", "ready")]
    admin.ok("DELETE", f"/api/client/backup/delete/{host}/b1", {"backup_name": name})
    assert admin.get(f"/api/client/backup/detail/{host}/b1") == []


def test_disks_and_password(admin: ApiClient, host: str, lab: TestLabEngine) -> None:
    create_vm(admin, host, "s1")
    admin.post(f"/api/client/hdd/mount/{host}/s1", {"hdd_name": "data1", "hdd_size": 5})
    vm = lab.hosts[f"lab://{host}"].vms["s1"]
    assert vm.disks == {"data1": True}
    admin.post(f"/api/client/hdd/unmount/{host}/s1", {})
    assert vm.disks == {"data1": False}
    assert admin.get("/api/users/current")["quota"]["used_hdd"] >= 15
    admin.delete(f"/api/client/hdd/delete/{host}/s1")
    assert vm.disks == {}
    admin.post(f"/api/client/password/{host}/s1", {"password": "N3w-pass!"})
    assert vm.password == "N3w-pass!"
    logs = admin.get("/api/system/logger/detail", params={"limit": 50})
    assert any(e["action"] == "vm.password" for e in logs)
    assert "N3w-pass!" not in str(logs)


def test_update_is_applied_and_rolled_back_on_failure(admin: ApiClient, host: str, lab: TestLabEngine) -> None:
    create_vm(admin, host, "up1")
    admin.run_task("PUT", f"/api/client/update/{host}/up1", {"cpu_num": 4, "mem_num": 2048})
    assert lab.hosts[f"lab://{host}"].vms["up1"].spec.cpu_num == 4
    vm = admin.get(f"/api/client/detail/{host}/up1")
    assert (vm["cpu_num"], vm["ram_num"]) == (4, 2048)
    lab.faults.fail["vm_update"] = "cannot hot-plug"
    started = admin.put(f"/api/client/update/{host}/up1", {"cpu_num": 8})
    assert admin.wait_task(started["task_id"])["state"] == "failed"
    assert admin.get(f"/api/client/detail/{host}/up1")["cpu_num"] == 4


def test_os_images_grouped(admin: ApiClient, host: str) -> None:
    images = admin.get(f"/api/client/os-images/{host}")
    assert images["ubuntu"] == [{"name": "Ubuntu 22.04", "file": "ubuntu-22.04", "kind": "image"}]
    assert set(images) == {"ubuntu", "debian", "other", "lost"}
    assert {"name": "Debian 12 installer", "file": "[datastore1] iso/debian 12.iso", "kind": "iso"} in images["debian"]
