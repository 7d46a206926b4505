"""A server SIGKILLed in the middle of creates, deletes, NAT adds and backups on real Docker and real
LXD, then started again on the same data: every task's outcome agrees with the host, nothing is left
in between, and the audit log and the event hooks hear each outcome once.

The server is ``tests/crashlab_server.py`` (``idcs serve`` with the real engines wrapped by
``crashlab``): each request of the burst stops at its own point (before the engine call, inside it,
after it but before the record), so one kill covers every point deterministically.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from crashlab import ENV, events

from idcs_core.testing.server import ApiClient, LiveServer, free_port
from idcs_core.types import HostSpec

HERE = Path(__file__).parent
RECOVERED = "recovered after a restart"
PREFIX = "crash"  # every VM this module makes is named crash<hex>-...


class CrashServer(LiveServer):
    """``tests/crashlab_server.py`` as a child process, sharing a crash-point folder with the test."""

    def __init__(self, data_dir: Path, engine: str, lab: Path) -> None:
        super().__init__(data_dir, subprocess_mode=True)
        self.engine, self.lab = engine, lab

    def _start_process(self) -> None:
        path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
        env = os.environ | {ENV: str(self.lab), "PYTHONPATH": path}
        cmd = [sys.executable, str(HERE / "crashlab_server.py"), "--data-dir", str(self.data_dir),
               "--port", str(self.port), "--engine", self.engine]
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def _wait_ready(self, timeout: float = 120) -> None:
        """Start-up recovers the interrupted tasks before serving (up to 20 s, more on a busy machine)."""
        super()._wait_ready(timeout)


@dataclass
class Backend:
    """One real back end: how the API registers it, and the host as the engine sees it."""

    engine: str  # crashlab_server --engine
    spec: HostSpec
    image: str
    ram_num: int
    engine_obj: Any
    made: list[str] = field(default_factory=list)

    def vms(self, prefix: str) -> dict[str, str]:
        """The host's VMs named ``prefix``*, with their status."""
        return {v.vm_uuid: v.status for v in self.engine_obj.vm_list(host=self.spec) if v.vm_uuid.startswith(prefix)}

    def backups(self, prefix: str) -> set[tuple[str, str]]:
        return {(b.vm_uuid, b.backup_name) for b in self.engine_obj.backup_list(host=self.spec)
                if b.vm_uuid.startswith(prefix)}

    def cleanup(self, prefix: str) -> None:
        for vm in self.vms(prefix):
            for vm_uuid, name in self.backups(vm):
                self.engine_obj.backup_delete(host=self.spec, vm_uuid=vm_uuid, backup_name=name)
            self.engine_obj.vm_delete(host=self.spec, vm_uuid=vm, progress=lambda *_: None)


@pytest.fixture(scope="module")
def docker(oci_backend: Any) -> Iterator[Backend]:
    from idcs_oci.engine import OCIEngine

    engine = OCIEngine()
    yield Backend("oci", oci_backend.host_spec("crash-docker"), oci_backend.image, 64, engine)
    engine.clients.close_all()


@pytest.fixture(scope="module")
def lxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    from idcs_lxd import testing
    from idcs_lxd.engine import LXDEngine

    work = tmp_path_factory.mktemp("crash-lxd")
    running = testing.start_backend("lxd", work)  # reuses a running daemon; fails loudly if none starts
    spec = running.host_spec("crash-lxd", nat_listen="127.0.0.1", cert_dir=str(work / "certs"))
    yield Backend("lxd", spec, running.image_alias, 128, LXDEngine())
    testing.stop_backend(running, prefix=PREFIX)


def _port_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.parametrize("backend_name", ["docker", "lxd"])
def test_kill_at_every_point_then_restart(backend_name: str, request: pytest.FixtureRequest,
                                          tmp_path: Path) -> None:
    backend: Backend = request.getfixturevalue(backend_name)
    prefix = f"{PREFIX}{uuid.uuid4().hex[:6]}"
    lab = tmp_path / "lab"
    lab.mkdir()

    def vm(op: str, point: str) -> str:
        return f"{prefix}-{op}-{point}"

    creates = {p: vm("c", p) for p in ("before", "during", "after")}
    deletes = {p: vm("d", p) for p in ("before", "during", "after")}
    nats = {p: vm("n", p) for p in ("before", "after")}  # nat_add reports no progress: no "during"
    backups = {p: vm("b", p) for p in ("before", "during", "after")}
    delivered = vm("c", "events")  # its create ends; the server dies while delivering its events
    premade = [*deletes.values(), *nats.values(), *backups.values()]
    nat_ports = {p: free_port() for p in nats}
    spec = {"os_name": backend.image, "cpu_num": 1, "ram_num": backend.ram_num, "hdd_num": 1}

    srv = CrashServer(tmp_path / "data", backend.engine, lab).start()
    try:
        admin = srv.admin()
        admin.post("/api/server/create", {"server_name": "h", "server_type": backend.spec.server_type,
                                          "server_addr": backend.spec.addr, "server_user": "", "server_pass": "",
                                          "options": backend.spec.options})
        made = [admin.post("/api/client/create/h", {"vm_uuid": name, **spec}, params={"wait": 0})["task_id"]
                for name in premade]
        for task_id in made:
            assert admin.wait_task(task_id, 120)["state"] == "success"

        # The burst: each request stops at its own point; then the server is killed.
        points = {f"vm_create:{n}": p for p, n in creates.items()} | {f"vm_delete:{n}": p for p, n in deletes.items()}
        points |= {f"nat_add:{n}": p for p, n in nats.items()} | {f"backup_create:{n}": p for p, n in backups.items()}
        points[f"vm_created:{delivered}"] = "before"
        (lab / "points.json").write_text(json.dumps(points))
        tasks: dict[str, str] = {}  # vm_uuid -> task id, as the API answered
        tasks[delivered] = admin.post("/api/client/create/h", {"vm_uuid": delivered, **spec},
                                      params={"wait": 0})["task_id"]
        for name in creates.values():
            tasks[name] = admin.post("/api/client/create/h", {"vm_uuid": name, **spec}, params={"wait": 0})["task_id"]
        for name in deletes.values():
            tasks[name] = admin.delete(f"/api/client/delete/h/{name}", params={"wait": 0})["task_id"]
        backup_names: dict[str, str] = {}
        for name in backups.values():
            started = admin.post(f"/api/client/backup/create/h/{name}", {"description": "burst"}, params={"wait": 0})
            tasks[name], backup_names[name] = started["task_id"], started["backup_name"]
        unanswered: list[str] = []

        def add_nat(name: str, port: int) -> None:
            try:  # the call waits for its task: it never answers, the server dies first
                httpx.post(f"{srv.url}/api/client/natadd/h/{name}", timeout=120,
                           json={"host_port": port, "vm_port": 80, "protocol": "tcp"},
                           headers={"Authorization": f"Bearer {admin.token}"})
            except httpx.HTTPError:
                unanswered.append(name)

        callers = [threading.Thread(target=add_nat, args=(nats[p], nat_ports[p])) for p in nats]
        for t in callers:
            t.start()
        _wait_for("every request to reach its point",
                  lambda: {f.name for f in (lab / "reached").glob("*")} >= set(points) if (lab / "reached").exists()
                  else False)
        srv.kill()
        for t in callers:
            t.join(30)
        assert sorted(unanswered) == sorted(nats.values())
    finally:
        srv.stop()

    (lab / "points.json").unlink()
    srv = CrashServer(tmp_path / "data", backend.engine, lab).start()  # same data; recovery before serving
    try:
        admin = srv.admin()
        _check_outcomes(admin, backend, prefix, creates, deletes, nats, nat_ports, backups, backup_names, tasks)
        task = admin.get(f"/api/tasks/{tasks[delivered]}")  # it ended before the crash: not recovered
        assert task["state"] == "success" and RECOVERED not in task["message"], task
        _check_heard_once(admin, lab)
        created = Counter(e["vm_uuid"] for e in events(lab) if e["event"] == "vm_created")
        assert created == Counter([*premade, creates["after"], delivered])
    finally:
        srv.stop()
        backend.cleanup(prefix)


def test_kill_a_burst_mid_flight_then_restart(docker: Backend, tmp_path: Path) -> None:
    """The issue's report: a burst accepted (creates, deletes, backups with ?wait=0; NAT adds that
    wait), the server SIGKILLed 0.3 s later wherever each request is, started again: consistent."""
    backend, prefix, lab = docker, f"{PREFIX}{uuid.uuid4().hex[:6]}", tmp_path / "lab"
    lab.mkdir()
    spec = {"os_name": backend.image, "cpu_num": 1, "ram_num": backend.ram_num, "hdd_num": 1}
    srv = CrashServer(tmp_path / "data", backend.engine, lab).start()
    try:
        admin = srv.admin()
        admin.post("/api/server/create", {"server_name": "h", "server_type": backend.spec.server_type,
                                          "server_addr": backend.spec.addr, "server_user": "", "server_pass": "",
                                          "options": backend.spec.options})
        olds = [f"{prefix}-old{i}" for i in range(6)]
        for task_id in [admin.post("/api/client/create/h", {"vm_uuid": n, **spec}, params={"wait": 0})["task_id"]
                        for n in olds]:
            assert admin.wait_task(task_id, 120)["state"] == "success"
        for i in range(8):
            admin.post("/api/client/create/h", {"vm_uuid": f"{prefix}-new{i}", **spec}, params={"wait": 0})
        for name in olds[:2]:
            admin.delete(f"/api/client/delete/h/{name}", params={"wait": 0})
        for name in olds[2:4]:
            admin.post(f"/api/client/backup/create/h/{name}", {"description": "burst"}, params={"wait": 0})

        def add_nat(name: str) -> None:
            try:
                httpx.post(f"{srv.url}/api/client/natadd/h/{name}", timeout=60, headers={
                    "Authorization": f"Bearer {admin.token}"}, json={"host_port": free_port(), "vm_port": 80,
                                                                     "protocol": "tcp"})
            except httpx.HTTPError:
                pass  # killed before it answered

        callers = [threading.Thread(target=add_nat, args=(name,)) for name in olds[4:]]
        for t in callers:
            t.start()
        time.sleep(0.3)  # the report's timing: no event to wait for, the point is not to choose one
        srv.kill()
        for t in callers:
            t.join(30)
    finally:
        srv.stop()
    srv = CrashServer(tmp_path / "data", backend.engine, lab).start()
    try:
        admin = srv.admin()
        _check_consistent(admin, backend, prefix)
        _check_heard_once(admin, lab)
    finally:
        srv.stop()
        backend.cleanup(prefix)


def test_kill_during_power_and_password_then_restart(docker: Backend, tmp_path: Path) -> None:
    """Power actions and a password change that wait for their tasks, the server SIGKILLed with each
    stopped before or after its engine call: at the next start each power task agrees with the
    container (the stop that reached Docker succeeds, the one that did not fails) and the recorded
    status is Docker's; the password task fails ("set it again": it was never stored); each outcome
    is audited and heard once."""
    backend, prefix, lab = docker, f"{PREFIX}{uuid.uuid4().hex[:6]}", tmp_path / "lab"
    lab.mkdir()
    spec = {"os_name": backend.image, "cpu_num": 1, "ram_num": backend.ram_num, "hdd_num": 1}
    stop_before, stop_after, password = (f"{prefix}-{n}" for n in ("pb", "pa", "pw"))
    calls = {stop_before: ("powers", {"action": "H_CLOSE"}), stop_after: ("powers", {"action": "H_CLOSE"}),
             password: ("password", {"password": "Crash-Pass-5521"})}
    srv = CrashServer(tmp_path / "data", backend.engine, lab).start()
    try:
        admin = srv.admin()
        admin.post("/api/server/create", {"server_name": "h", "server_type": backend.spec.server_type,
                                          "server_addr": backend.spec.addr, "server_user": "", "server_pass": "",
                                          "options": backend.spec.options})
        for name in calls:
            admin.run_task("POST", "/api/client/create/h", {"vm_uuid": name, **spec}, timeout=120)
        points = {f"vm_power:{stop_before}": "before", f"vm_power:{stop_after}": "after",
                  f"vm_set_password:{password}": "before"}
        (lab / "points.json").write_text(json.dumps(points))
        unanswered: list[str] = []

        def call(name: str) -> None:
            route, body = calls[name]
            try:  # the call waits for its task: it never answers, the server dies first
                httpx.post(f"{srv.url}/api/client/{route}/h/{name}", json=body, timeout=120,
                           headers={"Authorization": f"Bearer {admin.token}"})
            except httpx.HTTPError:
                unanswered.append(name)

        callers = [threading.Thread(target=call, args=(name,)) for name in calls]
        for t in callers:
            t.start()
        _wait_for("every request to reach its point",
                  lambda: {f.name for f in (lab / "reached").glob("*")} >= set(points) if (lab / "reached").exists()
                  else False)
        srv.kill()
        for t in callers:
            t.join(30)
        assert sorted(unanswered) == sorted(calls)
    finally:
        srv.stop()

    (lab / "points.json").unlink()
    srv = CrashServer(tmp_path / "data", backend.engine, lab).start()  # same data; recovery before serving
    try:
        admin = srv.admin()
        ended = {t["vm_uuid"]: t for t in admin.get("/api/tasks", params={"limit": 100})
                 if t["kind"] in ("vm_power", "vm_password")}
        assert ended[stop_after]["state"] == "success" and RECOVERED in ended[stop_after]["message"], ended
        assert ended[stop_before]["state"] == "failed" and "running on the host" in ended[stop_before]["message"]
        assert ended[password]["state"] == "failed" and "set it again" in ended[password]["message"], ended
        records = {v["vm_uuid"]: v["status"] for v in admin.get("/api/client/detail")}
        on_host = backend.vms(prefix)
        assert (records[stop_before], records[stop_after]) == ("running", "stopped"), records
        assert (on_host[stop_before], on_host[stop_after]) == ("running", "stopped"), on_host
        _check_heard_once(admin, lab)
        stored = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir() if p.name.startswith("idcs.db"))
        assert b"Crash-Pass-5521" not in stored and "Crash-Pass-5521" not in srv.log_tail(100000)
    finally:
        srv.stop()
        backend.cleanup(prefix)


def _check_outcomes(admin: ApiClient, backend: Backend, prefix: str, creates: dict[str, str],
                    deletes: dict[str, str], nats: dict[str, str], nat_ports: dict[str, int],
                    backups: dict[str, str], backup_names: dict[str, str], tasks: dict[str, str]) -> None:
    def task(name: str) -> dict[str, Any]:
        return admin.get(f"/api/tasks/{tasks[name]}")

    records = {v["vm_uuid"]: v for v in admin.get("/api/client/detail/h")}
    on_host = backend.vms(prefix)
    # Creates: stopped before the engine call or half way -> failed, nothing left; after it -> recovered.
    for point, name in creates.items():
        t = task(name)
        if point == "after":
            assert t["state"] == "success" and RECOVERED in t["message"], t
            assert records[name]["status"] == "running" and on_host[name] == "running"
        else:
            assert t["state"] == "failed" and "server stopped" in t["message"], t
            assert name not in records and name not in on_host, (point, t)
    # Deletes, wherever they stopped, are finished.
    for name in deletes.values():
        t = task(name)
        assert t["state"] == "success" and RECOVERED in t["message"], t
        assert name not in records and name not in on_host
    # NAT adds that never answered are undone: no record, no forward on the host.
    nat_tasks = [t for t in admin.get("/api/tasks", params={"limit": 200}) if t["kind"] == "nat_add"]
    for point, name in nats.items():
        [t] = [t for t in nat_tasks if t["vm_uuid"] == name]
        assert t["state"] == "failed" and "server stopped" in t["message"], t
        assert admin.get(f"/api/client/natget/h/{name}") == []
        assert not _port_answers(nat_ports[point]), f"a forward on port {nat_ports[point]} is left ({point})"
    # Backups: kept when the host has them whole, else removed.
    listed = backend.backups(prefix)
    for point, name in backups.items():
        t, backup = task(name), backup_names[name]
        rows = {b["backup_name"]: b for b in admin.get(f"/api/client/backup/detail/h/{name}")}
        if point == "before":
            assert t["state"] == "failed" and "server stopped" in t["message"], t
            assert backup not in rows and (name, backup) not in listed
        else:
            assert t["state"] == "success" and RECOVERED in t["message"], t
            assert rows[backup]["status"] == "ready" and (name, backup) in listed

    _check_consistent(admin, backend, prefix)


def _check_consistent(admin: ApiClient, backend: Backend, prefix: str) -> None:
    """Across the host: no VM, rule or backup that no record knows, no record without its object,
    nothing in between, no task unended, the quota counting what exists."""
    records = {v["vm_uuid"]: v for v in admin.get("/api/client/detail/h")}
    on_host = backend.vms(prefix)
    assert set(records) == set(on_host), (set(records) ^ set(on_host))
    assert all(v["status"] in ("running", "stopped", "paused") for v in records.values()), records
    known = {(name, b["backup_name"]) for name in records for b in admin.get(f"/api/client/backup/detail/h/{name}")}
    assert known == backend.backups(prefix)
    assert all(b["status"] == "ready" for name in records for b in admin.get(f"/api/client/backup/detail/h/{name}"))
    all_tasks = admin.get("/api/tasks", params={"limit": 500})
    assert [t for t in all_tasks if t["state"] not in ("success", "failed")] == []
    rules = {r["host_port"] for name in records for r in admin.get(f"/api/client/natget/h/{name}")}
    for t in all_tasks:
        if t["kind"] == "nat_add":
            port = t["result"].get("host_port")
            if port is not None:  # a rule that was applied: it works exactly while it is recorded
                assert _port_answers(port) == (port in rules), (t, rules)
    for port in rules:
        assert _port_answers(port), f"recorded NAT rule {port} does not forward"
    used = admin.get("/api/users/current")["quota"]
    assert (used["used_vms"], used["used_backups"], used["used_nat"]) == (len(records), len(known), len(rules))


def _check_heard_once(admin: ApiClient, lab: Path) -> None:
    """The audit log heard each task's outcome exactly once; the event hooks heard it once per
    process: delivery is at least once, so an event whose delivery the kill cut short (sent, not
    yet cleared from the task's outbox) is sent again by the next process, never twice by one."""
    ended = admin.get("/api/tasks", params={"limit": 500})
    heard = events(lab)

    def once_per_process(event: str, key: str) -> set[str]:
        by_key: dict[str, list[int]] = {}
        for e in heard:
            if e["event"] == event:
                by_key.setdefault(e[key], []).append(e["pid"])
        twice = {k: pids for k, pids in by_key.items() if len(set(pids)) != len(pids)}
        assert not twice, f"{event} heard twice by one process: {twice}"
        return set(by_key)

    assert once_per_process("task_finished", "task_id") == {t["id"] for t in ended}, "each task's end is heard"
    states = {e["task_id"]: e["state"] for e in heard if e["event"] == "task_finished"}
    assert states == {t["id"]: t["state"] for t in ended}
    created = once_per_process("vm_created", "vm_uuid")
    assert created == {t["vm_uuid"] for t in ended if t["kind"] == "vm_create" and t["state"] == "success"}
    deleted = once_per_process("vm_deleted", "vm_uuid")
    assert deleted == {t["vm_uuid"] for t in ended if t["kind"] == "vm_delete" and t["state"] == "success"}
    log = admin.get("/api/system/logger/detail", params={"limit": 1000})
    outcomes = Counter(e["detail"].split(":")[0] for e in log if e["result"] in ("success", "failed")
                       and e["detail"].startswith("task "))
    assert outcomes == Counter(f"task {t['id']}" for t in ended), "each task's end is audited exactly once"
    for t in ended:
        [entry] = [e for e in log if e["detail"].startswith(f"task {t['id']}:")]
        assert entry["result"] == t["state"]


def test_every_task_kind_has_a_recovery_rule() -> None:
    import idcs_core.app  # noqa: F401  (every service registers its handlers)
    from idcs_core.tasks import HANDLERS, RECOVERIES

    assert set(HANDLERS) <= set(RECOVERIES), set(HANDLERS) - set(RECOVERIES)
