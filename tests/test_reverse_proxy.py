"""Reverse proxies through the core's own Caddy, for an engine without a proxy of its own.

A real server, a real Docker container serving HTTP (the test image's httpd on port 80)
and the real Debian ``caddy``: requests sent with ``curl --resolve`` to Caddy's ports reach
the container over HTTP and HTTPS (trusting Caddy's internal root from the server's data
directory); the rules come back after Caddy is killed by its PID and after a server
restart; a removed rule answers 404 from Caddy; a rule Caddy refuses leaves no record.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from idcs_core.testing.server import ApiClient, LiveServer, free_port

BODY = "hello from idcs-test"  # what the test image's httpd serves


@dataclass
class Curl:
    status: int
    body: str
    location: str = ""


def curl(domain: str, port: int, *, https: bool = False, cacert: Path | None = None) -> Curl | None:
    """``curl --resolve domain:port:127.0.0.1``; None when no HTTP answer came (refused, TLS)."""
    scheme = "https" if https else "http"
    cmd = ["curl", "-sS", "--max-time", "5", "--resolve", f"{domain}:{port}:127.0.0.1", "-o", "-",
           "-w", "\n%{http_code} %{redirect_url}", f"{scheme}://{domain}:{port}/"]
    if cacert is not None:
        cmd[1:1] = ["--cacert", str(cacert)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
    if done.returncode != 0:
        return None
    body, _, tail = done.stdout.rpartition("\n")
    code, _, location = tail.partition(" ")
    return Curl(int(code), body, location.strip())


def until(probe: Any, what: str, timeout: float = 20.0) -> Any:
    """Poll ``probe()`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what}: not after {timeout:g} s (last: {last})")


class World:
    def __init__(self, data_dir: Path, backend: Any) -> None:
        self.data_dir = data_dir
        self.backend = backend
        self.tag = secrets.token_hex(3)
        self.hs = f"px-{self.tag}"
        self.http_port, self.https_port = free_port(), free_port()
        self.server: LiveServer | None = None
        self.admin: ApiClient | None = None

    @property
    def caddy_dir(self) -> Path:
        return self.data_dir / "caddy"

    @property
    def root_cert(self) -> Path:
        return self.caddy_dir / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    def caddy_pid(self) -> int | None:
        try:
            pid = int((self.caddy_dir / "caddy.pid").read_text())
        except (OSError, ValueError):
            return None
        try:
            alive = b"caddy" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            alive = False
        return pid if alive else None

    def start(self) -> ApiClient:
        self.server = LiveServer(self.data_dir).start()
        self.admin = self.server.admin()
        return self.admin

    def stop(self) -> None:
        if self.admin is not None:
            self.admin.close()
        if self.server is not None:
            self.server.stop()
        self.server = self.admin = None

    def vm_path(self, route: str, vm: str, *extra: str) -> str:
        return "/".join([f"/api/client/{route}/{self.hs}/{vm}", *extra])

    def http(self, domain: str) -> Curl | None:
        return curl(domain, self.http_port)

    def https(self, domain: str) -> Curl | None:
        return curl(domain, self.https_port, https=True, cacert=self.root_cert)


@pytest.fixture
def world(oci_backend: Any, tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path / "srv", oci_backend)
    admin = w.start()
    admin.post("/api/system/settings", {"proxy_http_port": w.http_port, "proxy_https_port": w.https_port})
    spec = oci_backend.host_spec()
    admin.post("/api/server/create", {"server_name": w.hs, "server_type": "OCInterface", "server_addr": spec.addr,
                                      "server_user": "", "server_pass": "", "options": spec.options,
                                      "public_addr": "127.0.0.1"})
    try:
        yield w
    finally:
        if w.admin is None:
            w.start()
        assert w.admin is not None
        for vm in w.admin.get(f"/api/client/detail/{w.hs}"):
            w.admin.run_task("DELETE", w.vm_path("delete", vm["vm_uuid"]))
        w.admin.delete(f"/api/server/delete/{w.hs}")
        pid = w.caddy_pid()
        w.stop()
        assert pid is None or w.caddy_pid() is None, "the server left its Caddy running at shut-down"


def make_vm(w: World, name: str) -> str:
    assert w.admin is not None
    vm = f"{name}-{w.tag}"
    w.admin.run_task("POST", f"/api/client/create/{w.hs}", {"vm_uuid": vm, "os_name": w.backend.image,
                                                            "cpu_num": 1, "ram_num": 64, "hdd_num": 1})
    return vm


def test_proxy_http_and_https_through_caddy_survive_kill_and_restart(world: World) -> None:
    w = world
    admin = w.admin
    assert admin is not None
    vm = make_vm(w, "web")
    nat_port = free_port()
    admin.post(w.vm_path("natadd", vm), {"host_port": nat_port, "vm_port": 80, "protocol": "tcp"})
    plain, secure = f"www-{w.tag}.example.test", f"shop-{w.tag}.example.test"
    assert w.caddy_pid() is None  # nothing started before a rule needs it

    added = admin.post(w.vm_path("proxys/create", vm), {"domain": plain, "lan_port": 80})
    admin.post(w.vm_path("proxys/create", vm), {"domain": secure, "lan_port": 80, "is_https": True})
    assert [(p["domain"], p["is_https"]) for p in admin.get(w.vm_path("proxys/detail", vm))] == [
        (plain, False), (secure, True)]

    got = w.http(plain)
    assert got is not None and (got.status, got.body.strip()) == (200, BODY), got
    got = until(lambda: w.https(secure), "HTTPS with a certificate of Caddy's internal CA")
    assert (got.status, got.body.strip()) == (200, BODY), got
    got = w.http(secure)  # the plain-HTTP side of an HTTPS domain sends the browser over
    assert got is not None and got.status == 308 and got.location == f"https://{secure}:{w.https_port}/", got
    got = w.http(f"nobody-{w.tag}.example.test")
    assert got is not None and got.status == 404, got
    assert w.https(plain) is None  # an HTTP-only domain has no certificate: no HTTPS for it

    # Caddy killed by its PID: the server notices, starts it again and reloads the rules
    first = w.caddy_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    until(lambda: (w.caddy_pid() or first) != first, "a new Caddy after the kill")
    got = until(lambda: w.http(plain), "the HTTP rule after Caddy was killed")
    assert (got.status, got.body.strip()) == (200, BODY), got
    got = until(lambda: w.https(secure), "the HTTPS rule after Caddy was killed")
    assert got.status == 200, got

    # killed again, and the server restarted: the rules come back from the database
    second = w.caddy_pid()
    assert second is not None
    os.kill(second, signal.SIGKILL)
    w.stop()
    assert w.caddy_pid() is None
    assert w.http(plain) is None  # nothing listens while the server is down
    admin = w.start()
    got = until(lambda: w.http(plain), "the HTTP rule after a server restart")
    assert (got.status, got.body.strip()) == (200, BODY), got
    got = until(lambda: w.https(secure), "the HTTPS rule after a server restart")
    assert (got.status, got.body.strip()) == (200, BODY), got

    # removed: Caddy answers 404 for the domain at once
    admin.delete(w.vm_path("proxys/delete", vm, str(added["proxy_index"])))
    got = w.http(plain)
    assert got is not None and got.status == 404, got
    assert [p["domain"] for p in admin.get(w.vm_path("proxys/detail", vm))] == [secure]


def test_proxy_to_the_vm_address_and_cleanup_with_the_vm(world: World) -> None:
    """Without a NAT rule Caddy dials the container's own address; a deleted VM's rule goes."""
    w = world
    admin = w.admin
    assert admin is not None
    vm = make_vm(w, "direct")
    domain = f"direct-{w.tag}.example.test"
    admin.post(w.vm_path("proxys/create", vm), {"domain": domain, "lan_port": 80})
    got = w.http(domain)
    assert got is not None and (got.status, got.body.strip()) == (200, BODY), got
    admin.run_task("DELETE", w.vm_path("delete", vm))
    until(lambda: (r := w.http(domain)) is not None and r.status == 404, "404 once the VM is deleted")


def test_refused_or_invalid_rules_leave_nothing(world: World) -> None:
    w = world
    admin = w.admin
    assert admin is not None
    vm = make_vm(w, "bad")
    path = w.vm_path("proxys/create", vm)

    # validation first: nothing recorded, nothing started
    for body, code in [({"domain": "not a domain", "lan_port": 80}, 400),
                       ({"domain": f"x-{w.tag}.example.test", "lan_port": 0}, 400)]:
        status, answer = admin.call("POST", path, body)
        assert (status, answer["code"]) == (400, code), answer
    status, answer = admin.call("POST", "/api/system/settings", {"proxy_https_port": w.http_port})
    assert (status, answer["code"]) == (400, 400) and "differ" in answer["msg"], answer
    status, answer = admin.call("POST", "/api/system/settings", {"proxy_tls_issuer": "letsencrypt-now"})
    assert (status, answer["code"]) == (400, 400), answer
    status, answer = admin.call("PUT", f"/api/server/update/{w.hs}", {"proxy_endpoint": "ftp://10.0.0.1:21"})
    assert (status, answer["code"]) == (400, 400) and "proxy_endpoint" in answer["msg"], answer
    assert admin.get(w.vm_path("proxys/detail", vm)) == []

    # Caddy refuses (its HTTP port is held by another program): the record is rolled back
    holder = socket.socket()
    holder.bind(("0.0.0.0", 0))
    holder.listen()
    try:
        admin.post("/api/system/settings", {"proxy_http_port": holder.getsockname()[1]})
        status, answer = admin.call("POST", path, {"domain": f"held-{w.tag}.example.test", "lan_port": 80})
        assert status >= 400 and answer["code"] in (1003, 1005), answer
        assert "reverse proxy" in answer["msg"], answer
        assert admin.get(w.vm_path("proxys/detail", vm)) == []
    finally:
        holder.close()
    admin.post("/api/system/settings", {"proxy_http_port": w.http_port})
    domain = f"held-{w.tag}.example.test"
    admin.post(path, {"domain": domain, "lan_port": 80})  # the same domain is free again
    got = w.http(domain)
    assert got is not None and (got.status, got.body.strip()) == (200, BODY), got

    # a host whose proxy_endpoint is off has no reverse proxies (1006), and keeps its records
    detail = admin.put(f"/api/server/update/{w.hs}", {"proxy_endpoint": "off"})
    assert detail["config"]["proxy_endpoint"] == "off" and "proxy_endpoint" not in detail["options"]
    status, answer = admin.call("POST", path, {"domain": f"off-{w.tag}.example.test", "lan_port": 80})
    assert (status, answer["code"]) == (501, 1006), answer
    assert [p["domain"] for p in admin.get(w.vm_path("proxys/detail", vm))] == [domain]
    admin.put(f"/api/server/update/{w.hs}", {"proxy_endpoint": "local"})


def test_a_normal_user_may_only_name_the_vms_own_address(world: World) -> None:
    w = world
    admin = w.admin
    assert admin is not None
    user = admin.post("/api/users", {"username": f"px{w.tag}", "password": "Px-pass-123", "email": "px@example.com"})
    vm = f"mine-{w.tag}"
    admin.run_task("POST", f"/api/client/create/{w.hs}", {"vm_uuid": vm, "os_name": w.backend.image, "cpu_num": 1,
                                                          "ram_num": 64, "hdd_num": 1, "owner_id": user["id"]})
    assert w.server is not None
    client = w.server.client()
    client.login(f"px{w.tag}", "Px-pass-123")
    path = w.vm_path("proxys/create", vm)
    for other in ("127.0.0.1", "10.255.0.1"):  # this server's own port, or someone else's machine
        status, answer = client.call("POST", path, {"domain": f"ssrf-{w.tag}.example.test", "lan_port": 1880,
                                                    "lan_addr": other})
        assert (status, answer["code"]) == (403, 403) and "not an address of" in answer["msg"], answer
    own = [ip["address"] for ip in client.get(w.vm_path("ipaddr/detail", vm)) if ":" not in ip["address"]]
    assert own, "the container reports no IPv4 address"
    domain = f"own-{w.tag}.example.test"
    client.post(path, {"domain": domain, "lan_port": 80, "lan_addr": own[0]})
    got = w.http(domain)
    assert got is not None and (got.status, got.body.strip()) == (200, BODY), got
    client.close()


def test_a_crashed_server_takes_its_caddy_over(oci_backend: Any, tmp_path: Path) -> None:
    """The server process is killed: its Caddy goes on serving; the next server takes that
    Caddy over (not a second one) and stops it by its PID at shut-down."""
    w = World(tmp_path / "srv", oci_backend)
    srv = LiveServer(w.data_dir, subprocess_mode=True, env={"IDCS_LOAD_ENGINES": "OCInterface"}).start()
    admin = srv.admin()
    admin.post("/api/system/settings", {"proxy_http_port": w.http_port, "proxy_https_port": w.https_port})
    spec = oci_backend.host_spec()
    admin.post("/api/server/create", {"server_name": w.hs, "server_type": "OCInterface", "server_addr": spec.addr,
                                      "server_user": "", "server_pass": "", "options": spec.options})
    vm = f"crash-{w.tag}"
    admin.run_task("POST", f"/api/client/create/{w.hs}", {"vm_uuid": vm, "os_name": oci_backend.image,
                                                          "cpu_num": 1, "ram_num": 64, "hdd_num": 1})
    admin.post(w.vm_path("natadd", vm), {"host_port": free_port(), "vm_port": 80, "protocol": "tcp"})
    domain = f"crash-{w.tag}.example.test"
    admin.post(w.vm_path("proxys/create", vm), {"domain": domain, "lan_port": 80})
    admin.close()
    pid = w.caddy_pid()
    assert pid is not None
    srv.kill()
    try:
        got = w.http(domain)
        assert got is not None and got.status == 200, got  # Caddy outlives the crashed server
        srv = LiveServer(w.data_dir, subprocess_mode=True, env={"IDCS_LOAD_ENGINES": "OCInterface"}).start()
        admin = srv.admin()
        admin.post(w.vm_path("proxys/create", vm), {"domain": f"more-{w.tag}.example.test", "lan_port": 80})
        assert w.caddy_pid() == pid  # taken over, not started twice
        got = w.http(f"more-{w.tag}.example.test")
        assert got is not None and (got.status, got.body.strip()) == (200, BODY), got
        admin.run_task("DELETE", w.vm_path("delete", vm))
        admin.delete(f"/api/server/delete/{w.hs}")
        admin.close()
    finally:
        srv.stop()
        left = w.caddy_pid()
        if left is not None:  # never leave it behind, even when the test failed
            os.kill(left, signal.SIGKILL)
    assert left is None, "the server did not stop the Caddy it took over"


def _interrupt(db: Path, kind: str, hs_name: str, vm_uuid: str, params: dict[str, Any]) -> str:
    """Make the database say what a process killed during a ``kind`` task leaves: the task running."""
    task_id = str(uuid.uuid4())
    with sqlite3.connect(db) as con:
        con.execute("INSERT INTO tasks (id, kind, host_name, vm_uuid, user_id, state, progress, message, params, "
                    "result, created_at, updated_at) VALUES (?, ?, ?, ?, 1, 'running', 40, '', ?, '{}', "
                    "'2026-12-02 06:00:00.000000', '2026-12-02 06:00:00.000000')",
                    (task_id, kind, hs_name, vm_uuid, json.dumps(params)))
    return task_id


def test_proxy_changes_are_tasks_audited_once_and_settled_after_a_crash(world: World) -> None:
    """proxy_add / proxy_delete show in /api/tasks and are audited once, when they end; a task a dead
    process left running is settled at the next start: an add is undone (the caller never had an
    answer), a removal finished."""
    w = world
    admin = w.admin
    assert admin is not None
    vm = make_vm(w, "tasks")
    kept, cut, going = (f"{name}-{w.tag}.example.test" for name in ("kept", "cut", "going"))
    added = {d: admin.post(w.vm_path("proxys/create", vm), {"domain": d, "lan_port": 80}) for d in (kept, cut, going)}
    admin.delete(w.vm_path("proxys/delete", vm, str(added[kept]["proxy_index"])))
    admin.post(w.vm_path("proxys/create", vm), {"domain": kept, "lan_port": 80})  # the domain is free again
    mine = [t for t in admin.get("/api/tasks", params={"limit": 500}) if t["vm_uuid"] == vm]
    assert sorted((t["kind"], t["state"], t["progress"]) for t in mine if t["kind"].startswith("proxy")) == [
        *[("proxy_add", "success", 100)] * 4, ("proxy_delete", "success", 100)], mine
    log = [e for e in admin.get("/api/system/logger/detail", params={"limit": 500}) if e["target"] == f"{w.hs}/{vm}"]
    assert [e["action"] for e in log].count("proxy.add") == 4, log
    assert [e["action"] for e in log].count("proxy.delete") == 1, log

    w.stop()  # as if killed while adding ``cut`` (already served) and removing ``going``
    db = w.data_dir / "idcs.db"
    with sqlite3.connect(db) as con:
        ids = dict(con.execute("SELECT domain, id FROM proxies").fetchall())
    started = {"add": _interrupt(db, "proxy_add", w.hs, vm, {"proxy_id": ids[cut], "native": False}),
               "delete": _interrupt(db, "proxy_delete", w.hs, vm, {"proxy_id": ids[going], "native": False})}
    admin = w.start()
    add, delete = (admin.wait_task(started[k], 60) for k in ("add", "delete"))
    assert add["state"] == "failed" and "taken off and its domain released" in add["message"], add
    assert delete["state"] == "success" and delete["message"].startswith("recovered after a restart"), delete
    assert [p["domain"] for p in admin.get(w.vm_path("proxys/detail", vm))] == [kept]
    got = until(lambda: w.http(kept), "the kept rule after the restart")
    assert (got.status, got.body.strip()) == (200, BODY), got
    for gone in (cut, going):
        got = w.http(gone)
        assert got is not None and got.status == 404, (gone, got)
