"""Through the REST API over SSH: the host goes down (sshd and its sessions killed) -> offline,
the VM records stay; it comes back -> online with the same VMs; a bad password or a wrong host key
-> 1003 and no host record."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from idcs_lxc.testing import IMAGE, PREFIX, Backend

from idcs_core.services.hosts import STATUS_TTL
from idcs_core.testing.server import ApiClient, LiveServer

HS = "lxct-rest"


@pytest.fixture(scope="module")
def api(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiClient]:
    server = LiveServer(tmp_path_factory.mktemp("lxc-rest"), host_timeout=4.0).start()
    client = server.admin()
    try:
        yield client
    finally:
        client.close()
        server.stop()


def _host_body(backend: Backend, name: str, **changes: object) -> dict[str, object]:
    body: dict[str, object] = {"server_name": name, "server_type": "Containers", "server_addr": backend.sshd.addr,
                               "server_user": "root", "server_pass": "", "options": backend.options("ssh")}
    return body | changes


def test_host_down_is_offline_and_nothing_is_lost(api: ApiClient, backend: Backend) -> None:
    assert api.post("/api/server/create", _host_body(backend, HS))["status"] == "online"
    vm = f"{PREFIX}rest"
    started = api.post(f"/api/client/create/{HS}", {"vm_uuid": vm, "os_name": IMAGE, "cpu_num": 1, "ram_num": 64,
                                                    "hdd_num": 1})
    assert api.wait_task(started["task_id"], 120)["state"] == "success"
    try:
        backend.sshd.stop()
        try:
            time.sleep(STATUS_TTL)
            assert api.get(f"/api/server/status/{HS}")["status"] == "offline"
            assert vm in [v["vm_uuid"] for v in api.get(f"/api/client/detail/{HS}")]
        finally:
            backend.sshd.start()
        deadline = time.monotonic() + 30
        while api.get(f"/api/server/status/{HS}")["status"] != "online":
            assert time.monotonic() < deadline, "the host did not come back online"
            time.sleep(0.5)
        assert api.get(f"/api/client/detail/{HS}/{vm}")["status"] == "running"
        state = subprocess.run(["lxc-info", "-P", backend.lxcpath, "-n", vm, "-sH"], capture_output=True, text=True)
        assert state.stdout.strip() == "RUNNING"  # the container never noticed
    finally:
        api.wait_task(api.delete(f"/api/client/delete/{HS}/{vm}")["task_id"], 120)
        api.delete(f"/api/server/delete/{HS}")


def test_bad_password_and_wrong_host_key_answer_1003_and_save_nothing(api: ApiClient, backend: Backend,
                                                                      tmp_path: Path) -> None:
    options = {k: v for k, v in backend.options("ssh").items() if k != "ssh_key"}
    status, body = api.call("POST", "/api/server/create",
                            _host_body(backend, "lxct-badpw", server_pass="wrong-password", options=options))
    assert (status, body["code"]) == (503, 1003) and "login" in body["msg"], body
    other = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    status, body = api.call("POST", "/api/server/create",
                            _host_body(backend, "lxct-wrongkey", options=backend.options("ssh", host_key=wrong)))
    assert (status, body["code"]) == (503, 1003) and "pinned" in body["msg"], body
    names = [h["server_name"] for h in api.get("/api/server/detail")]
    assert "lxct-badpw" not in names and "lxct-wrongkey" not in names
