"""Every change on a back end is a recorded task: power, guest password, ISO mount / unmount and IP
add / remove (TestLab engine; reverse proxies through Caddy: test_reverse_proxy.py).

Each shows in /api/tasks with its progress and outcome and is audited once, when it ends; bad input
records nothing; a hook that answers after its timeout is reconciled once it ends; a task a dead
process left running is settled at the next start; the password is never stored or logged.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from helpers import create_vm
from testlab import PASSWORD, TestLabEngine

from idcs_core.config import Config
from idcs_core.plugins import PluginRegistry
from idcs_core.testing.server import ApiClient, LiveServer
from idcs_core.types import IPAddress

ISO = "rescue.iso"
# kind -> the audit action its end writes (the names the routes used to write themselves)
ACTIONS = {"vm_power": "vm.power", "vm_password": "vm.password", "iso_mount": "iso.mount",
           "iso_unmount": "iso.unmount", "ip_add": "ip.add", "ip_delete": "ip.delete"}


def until(probe: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def tasks_of(client: ApiClient, vm_uuid: str) -> list[dict[str, Any]]:
    return [t for t in client.get("/api/tasks", params={"limit": 500}) if t["vm_uuid"] == vm_uuid]


def audit_of(client: ApiClient, target: str) -> list[dict[str, Any]]:
    return [e for e in client.get("/api/system/logger/detail", params={"limit": 500}) if e["target"] == target]


def test_each_change_is_a_task_audited_once_when_it_ends(admin: ApiClient, host: str, lab: TestLabEngine) -> None:
    create_vm(admin, host, "ct1")
    base = f"{host}/ct1"
    paused = admin.post(f"/api/client/powers/{base}", {"action": "S_PAUSE"})
    assert (paused["vm_uuid"], paused["action"], paused["status"]) == ("ct1", "S_PAUSE", "paused"), paused
    assert admin.post(f"/api/client/password/{base}", {"password": "Chg-Pass-91"}) == {"vm_uuid": "ct1"}
    assert admin.post(f"/api/client/iso/mount/{base}", {"iso_name": ISO}) is None
    assert admin.get(f"/api/client/detail/{base}")["isos"] == [ISO]
    assert admin.delete(f"/api/client/iso/unmount/{base}/{quote(ISO)}") is None
    added = admin.post(f"/api/client/ipaddr/create/{base}", {"nic_type": "pub", "ip4_addr": "203.0.113.40"})
    assert (added["ip_index"], added["address"], added["managed"]) == (0, "203.0.113.40", True), added
    assert admin.delete(f"/api/client/ipaddr/delete/{base}/0") is None

    lab_vm = lab.hosts[f"lab://{host}"].vms["ct1"]
    assert (lab_vm.status, lab_vm.password, lab_vm.cdrom, lab_vm.ips) == ("paused", "Chg-Pass-91", None, {})
    tasks = {t["kind"]: t for t in tasks_of(admin, "ct1") if t["kind"] in ACTIONS}
    assert set(tasks) == set(ACTIONS), tasks
    for task in tasks.values():
        assert (task["state"], task["progress"], task["host_name"]) == ("success", 100, host), task
        assert task["message"] and task["message"] != "done", task  # says what was done
    assert tasks["vm_power"]["result"]["status"] == "paused"
    assert "Chg-Pass-91" not in json.dumps(tasks)
    entries = audit_of(admin, base)
    for kind, action in ACTIONS.items():
        mine = [e for e in entries if e["action"] == action]
        assert len(mine) == 1, (action, mine)  # once: from the task's end, not also from the route
        assert mine[0]["result"] == "success" and mine[0]["detail"].startswith(f"task {tasks[kind]['id']}:")


def test_a_failed_change_is_a_failed_task_audited_once(admin: ApiClient, host: str, lab: TestLabEngine) -> None:
    create_vm(admin, host, "ct2")
    lab.faults.fail["vm_power"] = "the hypervisor refused"
    status, body = admin.call("POST", f"/api/client/powers/{host}/ct2", {"action": "H_CLOSE"})
    assert (status, body["code"]) == (500, 1005) and "the hypervisor refused" in body["msg"], body
    [task] = [t for t in tasks_of(admin, "ct2") if t["kind"] == "vm_power"]
    assert task["state"] == "failed" and task["result"] == {"code": 1005}, task
    [entry] = [e for e in audit_of(admin, f"{host}/ct2") if e["action"] == "vm.power"]
    assert entry["result"] == "failed" and "the hypervisor refused" in entry["detail"], entry
    assert admin.get(f"/api/client/detail/{host}/ct2")["status"] == "running"


def test_bad_input_records_no_task(admin: ApiClient, host: str) -> None:
    create_vm(admin, host, "ct3")
    base = f"{host}/ct3"
    before = tasks_of(admin, "ct3")
    for method, path, body, code in (
            ("POST", f"/api/client/powers/{base}", {"action": "S_EXPLODE"}, 400),
            ("POST", f"/api/client/iso/mount/{base}", {"iso_name": "not-listed.iso"}, 400),
            ("POST", f"/api/client/iso/mount/{base}", {"iso_name": "../etc/passwd"}, 400),
            ("POST", f"/api/client/password/{base}", {"password": ""}, 400),
            ("DELETE", f"/api/client/ipaddr/delete/{base}/7", None, 404),
            ("POST", f"/api/client/powers/{host}/nosuchvm", {"action": "S_START"}, 1002)):
        _status, answer = admin.call(method, path, body)
        assert answer["code"] == code, (path, answer)
    assert tasks_of(admin, "ct3") == before
    assert tasks_of(admin, "nosuchvm") == []


# ---------------------------------------------------------------------- hooks that answer after their timeout


class ShortTasks(LiveServer):
    def _config(self) -> Config:
        config = super()._config()
        config.task_timeout = 1.0
        return config


@pytest.fixture
def short(registry: PluginRegistry, tmp_path: Path) -> Iterator[ApiClient]:
    srv = ShortTasks(tmp_path, plugins=registry, host_timeout=2.0).start()
    admin = srv.admin()
    admin.post("/api/server/create", {"server_name": "late", "server_type": "TestLab",
                                      "server_addr": f"lab://late-{time.monotonic_ns()}",
                                      "server_user": "root", "server_pass": PASSWORD})
    yield admin
    admin.close()
    srv.stop()


def _lab_vm(lab: TestLabEngine, client: ApiClient, vm_uuid: str) -> Any:
    addr = client.get("/api/server/detail/late")["server_addr"]
    return lab.hosts[addr].vms[vm_uuid]


def _stored_status(client: ApiClient, vm_uuid: str) -> str:
    """The status the core has recorded (the all-hosts list asks no host)."""
    return str(next(v for v in client.get("/api/client/detail") if v["vm_uuid"] == vm_uuid)["status"])


def test_late_hooks_are_reconciled_once_they_end(short: ApiClient, lab: TestLabEngine) -> None:
    create_vm(short, "late", "lt1")
    lab_vm = _lab_vm(lab, short, "lt1")
    calls = lab.hosts[short.get("/api/server/detail/late")["server_addr"]].calls
    delay = 2.5  # the hooks finish 2.5 s in; their tasks give up at 1 s

    lab.faults.delay["iso_mount"] = delay
    status, body = short.call("POST", "/api/client/iso/mount/late/lt1", {"iso_name": ISO})
    assert (status, body["code"]) == (503, 1003), body
    assert "iso_mount" not in calls  # not yet: the hook goes on after its task failed
    until(lambda: "iso_unmount" in calls, "the ISO mounted after its task failed was never ejected")
    assert calls.index("iso_mount") < calls.index("iso_unmount") and lab_vm.cdrom is None, calls
    assert short.get("/api/client/detail/late/lt1")["isos"] == []

    lab.faults.delay["vm_ip_add"] = delay
    status, body = short.call("POST", "/api/client/ipaddr/create/late/lt1", {"ip4_addr": "198.51.100.9"})
    assert (status, body["code"]) == (503, 1003), body
    assert "vm_ip_add" not in calls
    until(lambda: "vm_ip_remove" in calls, "the address given after its task failed was never removed")
    assert calls.index("vm_ip_add") < calls.index("vm_ip_remove") and lab_vm.ips == {}, calls
    assert [ip for ip in short.get("/api/client/ipaddr/detail/late/lt1") if ip["managed"]] == []
    assert short.get("/api/users/current")["quota"]["used_ips"] == 0

    lab.faults.delay["vm_power"] = delay
    status, body = short.call("POST", "/api/client/powers/late/lt1", {"action": "S_PAUSE"})
    assert (status, body["code"]) == (503, 1003), body
    until(lambda: lab_vm.status == "paused", "the late pause never reached the host")
    until(lambda: _stored_status(short, "lt1") == "paused", "the state the late pause left was not recorded")

    failed = {t["kind"]: t for t in tasks_of(short, "lt1") if t["kind"] in ("iso_mount", "ip_add", "vm_power")}
    assert {k: (t["state"], t["result"]) for k, t in failed.items()} == {
        k: ("failed", {"code": 1003}) for k in ("iso_mount", "ip_add", "vm_power")}, failed


# ---------------------------------------------------------------------- tasks a dead process left running


def _interrupt(db: Path, kind: str, vm_uuid: str, params: dict[str, Any]) -> str:
    """Make the database say what a process killed during a ``kind`` task leaves: the task running."""
    task_id = str(uuid.uuid4())
    with sqlite3.connect(db) as con:
        now = "2026-12-02 06:00:00.000000"
        con.execute("INSERT INTO tasks (id, kind, host_name, vm_uuid, user_id, state, progress, message, params, "
                    "result, created_at, updated_at) VALUES (?, ?, 'r', ?, 1, 'running', 40, '', ?, '{}', ?, ?)",
                    (task_id, kind, vm_uuid, json.dumps(params), now, now))
    return task_id


def test_interrupted_changes_are_settled_at_the_next_start(tmp_path: Path, lab: TestLabEngine,
                                                           registry: PluginRegistry) -> None:
    addr = f"lab://changes-{time.monotonic_ns()}"
    with LiveServer(tmp_path, plugins=registry) as srv:
        admin = srv.admin()
        admin.post("/api/server/create", {"server_name": "r", "server_type": "TestLab", "server_addr": addr,
                                          "server_user": "u", "server_pass": PASSWORD})
        for name in ("pw", "pf", "ps", "cd", "ip"):
            create_vm(admin, "r", name)
        admin.post("/api/client/iso/mount/r/cd", {"iso_name": "[datastore1] iso/debian 12.iso"})
        admin.post("/api/client/ipaddr/create/r/ip", {"ip4_addr": "203.0.113.50"})
        used_ips = admin.get("/api/users/current")["quota"]["used_ips"]
    db = tmp_path / "idcs.db"
    with sqlite3.connect(db) as con:
        ids = dict(con.execute("SELECT vm_uuid, id FROM vms").fetchall())
        [(ip_row,)] = con.execute("SELECT id FROM ip_addresses").fetchall()
        # an add of 203.0.113.51 reserved (row + quota), cut short after the host took it
        cur = con.execute("INSERT INTO ip_addresses (vm_id, idx, nic_type, address, ip6_addr, mac_addr, tips, extra) "
                          "VALUES (?, 1, 'pub', '203.0.113.51', '', '', '', '{}')", (ids["ip"],))
        cut_ip = cur.lastrowid
        con.execute("UPDATE quotas SET used_ips = used_ips + 1 WHERE user_id = 1")
    lab_vms = lab.hosts[addr].vms
    lab_vms["pw"].status = "stopped"  # the stop reached the host before the crash
    lab_vms["ip"].ips["203.0.113.51"] = IPAddress("203.0.113.51", 4, "eth1")
    started = {
        "stop done": _interrupt(db, "vm_power", "pw", {"vm_id": ids["pw"], "action": "H_CLOSE", "word": "H_CLOSE"}),
        "pause not done": _interrupt(db, "vm_power", "pf", {"vm_id": ids["pf"], "action": "S_PAUSE",
                                                            "word": "S_PAUSE"}),
        "password": _interrupt(db, "vm_password", "ps", {"vm_id": ids["ps"], "username": "root"}),
        "mount": _interrupt(db, "iso_mount", "pf", {"vm_id": ids["pf"], "iso_name": ISO}),
        "unmount": _interrupt(db, "iso_unmount", "cd", {"vm_id": ids["cd"],
                                                        "iso_name": "[datastore1] iso/debian 12.iso"}),
        "ip add": _interrupt(db, "ip_add", "ip", {"ip_id": cut_ip, "request": {"ip4_addr": "203.0.113.51"}}),
        "ip delete": _interrupt(db, "ip_delete", "ip", {"ip_id": ip_row}),
    }
    with LiveServer(tmp_path, plugins=registry) as srv:
        admin = srv.admin()
        done = {what: admin.wait_task(task_id, 30) for what, task_id in started.items()}
        for what in ("stop done", "mount", "unmount", "ip delete"):
            assert done[what]["state"] == "success", done[what]
            assert done[what]["message"].startswith("recovered after a restart"), done[what]
        for what, says in (("pause not done", "running on the host"), ("password", "set it again"),
                           ("ip add", "taken off the VM")):
            assert done[what]["state"] == "failed" and says in done[what]["message"], done[what]
        assert _stored_status(admin, "pw") == "stopped"
        assert _stored_status(admin, "pf") == "running"
        assert admin.get("/api/client/detail/r/pf")["isos"] == [ISO]
        assert admin.get("/api/client/detail/r/cd")["isos"] == []
        assert [ip for ip in admin.get("/api/client/ipaddr/detail/r/ip") if ip["managed"]] == []
        assert admin.get("/api/users/current")["quota"]["used_ips"] == used_ips - 1
        entries = admin.get("/api/system/logger/detail", params={"limit": 500})
        for task_id in started.values():
            assert len([e for e in entries if e["detail"].startswith(f"task {task_id}:")]) == 1
    assert (lab_vms["pf"].cdrom, lab_vms["cd"].cdrom, lab_vms["ip"].ips) == (ISO, None, {})


# ---------------------------------------------------------------------- the password is never kept


def test_the_password_is_never_stored_or_logged(tmp_path: Path, lab: TestLabEngine, registry: PluginRegistry,
                                                caplog: pytest.LogCaptureFixture) -> None:
    secret, other, failing = "Zq-Secret-7781", "Zq-Other-2290", "Zq-Failing-3317"
    caplog.set_level(logging.DEBUG)
    addr = f"lab://pw-{time.monotonic_ns()}"
    with LiveServer(tmp_path, plugins=registry) as srv:
        admin = srv.admin()
        admin.post("/api/server/create", {"server_name": "r", "server_type": "TestLab", "server_addr": addr,
                                          "server_user": "u", "server_pass": PASSWORD})
        create_vm(admin, "r", "sec")
        admin.post("/api/client/password/r/sec", {"password": secret, "username": "admin"})
        assert lab.hosts[addr].vms["sec"].password == secret
        admin.put("/api/client/update/r/sec", {"password": other})  # the billing dialect's way
        assert lab.hosts[addr].vms["sec"].password == other
        lab.faults.fail["vm_set_password"] = "the guest agent is not running"
        status, body = admin.call("POST", "/api/client/password/r/sec", {"password": failing})
        assert (status, body["code"]) == (500, 1005) and "guest agent" in body["msg"], body
        kinds = [t for t in tasks_of(admin, "sec") if t["kind"] == "vm_password"]
        assert [t["state"] for t in kinds] == ["failed", "success", "success"], kinds
        assert kinds[-1]["message"] == "the password of admin was set"
        answers = json.dumps([kinds, admin.get("/api/system/logger/detail", params={"limit": 500})])
        actions = [e["action"] for e in audit_of(admin, "r/sec")]
        assert actions.count("vm.password") == 3, actions
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("idcs.db"))
    with sqlite3.connect(tmp_path / "idcs.db") as con:
        rows = json.dumps([con.execute("SELECT * FROM tasks").fetchall(),
                           con.execute("SELECT * FROM audit_log").fetchall()], default=str)
    logged = caplog.text + (srv.log_path.read_text() if srv.log_path.exists() else "")
    for password in (secret, other, failing):
        for where, text in (("the database file", stored.decode("latin-1")), ("tasks and audit rows", rows),
                            ("the logs", logged), ("API answers", answers)):
            assert password not in text, f"the password was found in {where}"


def test_late_nat_hooks_leave_host_and_records_agreeing(short: ApiClient, lab: TestLabEngine) -> None:
    """NAT add and delete are tasks too: an add the host makes after its task failed is taken off
    again, a removal that ends late is forgotten in the records then (nothing untracked either way)."""
    create_vm(short, "late", "lt2")
    lab_vm = _lab_vm(lab, short, "lt2")
    calls = lab.hosts[short.get("/api/server/detail/late")["server_addr"]].calls
    delay = 2.5  # the hooks finish 2.5 s in; their tasks give up at 1 s

    lab.faults.delay["nat_add"] = delay
    status, body = short.call("POST", "/api/client/natadd/late/lt2", {"host_port": 30022, "vm_port": 22})
    assert (status, body["code"]) == (503, 1003), body
    assert short.get("/api/client/natget/late/lt2") == []  # the reservation was given back at once
    until(lambda: "nat_remove" in calls, "the forward added after its task failed was never taken off")
    assert calls.index("nat_add") < calls.index("nat_remove") and lab_vm.nat == set(), calls
    del lab.faults.delay["nat_add"]

    rule = short.post("/api/client/natadd/late/lt2", {"host_port": 30023, "vm_port": 22})
    assert lab_vm.nat == {(30023, "tcp")}
    lab.faults.delay["nat_remove"] = delay
    status, body = short.call("DELETE", f"/api/client/natdel/late/lt2/{rule['rule_index']}")
    assert (status, body["code"]) == (503, 1003), body
    until(lambda: lab_vm.nat == set(), "the late removal never reached the host")
    until(lambda: short.get("/api/client/natget/late/lt2") == [], "the rule removed late is still recorded")
    del lab.faults.delay["nat_remove"]


def test_late_disk_hooks_leave_host_and_records_agreeing(short: ApiClient, lab: TestLabEngine) -> None:
    """Disk attach, detach and delete that end after their tasks failed: a new disk made late is
    deleted again (its record and quota were given back), a late detach and a late deletion are
    recorded once they end."""
    create_vm(short, "late", "lt3")
    lab_vm = _lab_vm(lab, short, "lt3")
    delay = 2.5

    def recorded_disks() -> dict[str, bool]:
        return {d["hdd_name"]: d["mounted"] for d in short.get("/api/client/detail/late/lt3")["disks"]}

    lab.faults.delay["disk_attach"] = delay
    status, body = short.call("POST", "/api/client/hdd/mount/late/lt3", {"hdd_name": "d1", "hdd_size": 1})
    assert (status, body["code"]) == (503, 1003), body
    assert recorded_disks() == {}
    calls = lab.hosts[short.get("/api/server/detail/late")["server_addr"]].calls
    assert "disk_attach" not in calls  # not yet: the hook goes on after its task failed
    until(lambda: "disk_delete" in calls, "the disk made after its task failed was never deleted")
    assert calls.index("disk_attach") < calls.index("disk_delete") and lab_vm.disks == {}, calls
    del lab.faults.delay["disk_attach"]

    short.post("/api/client/hdd/mount/late/lt3", {"hdd_name": "d2", "hdd_size": 1})
    lab.faults.delay["disk_detach"] = delay
    status, body = short.call("POST", "/api/client/hdd/unmount/late/lt3", {"hdd_name": "d2"})
    assert (status, body["code"]) == (503, 1003), body
    until(lambda: recorded_disks() == {"d2": False}, "the late detach was not recorded")
    assert lab_vm.disks == {"d2": False}
    del lab.faults.delay["disk_detach"]

    lab.faults.delay["disk_delete"] = delay
    status, body = short.call("DELETE", "/api/client/hdd/delete/late/lt3", json={"hdd_name": "d2"})
    assert (status, body["code"]) == (503, 1003), body
    until(lambda: recorded_disks() == {}, "the late deletion was not recorded")
    assert lab_vm.disks == {}
    del lab.faults.delay["disk_delete"]
