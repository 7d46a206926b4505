"""NAT and disk changes on real Docker are recorded tasks whose message, read through the REST API
(``GET /api/tasks/<id>``), states the restart the engine had to make: the one-time move of an
earlier release's published ports to live forwarding, and the recreation a disk attach or detach
needs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from idcs_oci import containers, naming, network
from idcs_oci.containers import Blueprint
from idcs_oci.engine import OCIEngine
from idcs_oci.testing import DockerBackend, free_port, http_get, sh

from idcs_core.testing.kit import EngineUnderTest, Kit


@pytest.fixture(scope="module")
def kit(oci_backend: DockerBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    spec = oci_backend.host_spec()
    eut = EngineUnderTest(server_type="OCInterface", server_addr=spec.addr, server_user="", server_pass="",
                          image=oci_backend.image, unreachable_addr="unix:///tmp/no-such-docker.sock",
                          options=dict(spec.options), vm_spec={"cpu_num": 1, "ram_num": 64, "hdd_num": 1})
    k = Kit(eut, Path(tmp_path_factory.mktemp("idcs-taskprog")))
    try:
        k.start()
        yield k
    finally:
        k.stop()


@pytest.fixture(scope="module")
def dc(oci_backend: DockerBackend) -> Iterator[docker.DockerClient]:
    c = oci_backend.client()
    yield c
    c.close()


def _last_task(kit: Kit, kind: str, vm: str) -> dict[str, Any]:
    """The newest task of ``kind`` on ``vm``, as ``GET /api/tasks/<id>`` shows it."""
    listed = [t for t in kit.api.get("/api/tasks", params={"limit": 50}) if t["kind"] == kind and t["vm_uuid"] == vm]
    assert listed, f"no {kind} task recorded for {vm}"
    return dict(kit.api.get(f"/api/tasks/{listed[0]['id']}"))


def _task_count(kit: Kit, kind: str, vm: str) -> int:
    return sum(t["kind"] == kind and t["vm_uuid"] == vm for t in kit.api.get("/api/tasks", params={"limit": 200}))


def _mounts(dc: docker.DockerClient, vm: str) -> str:
    return sh(dc, vm, "cat /proc/mounts")


def test_nat_add_task_states_the_one_restart_of_an_earlier_release_container(
        kit: Kit, dc: docker.DockerClient, oci_backend: DockerBackend) -> None:
    vm = kit.create_vm("legacy")
    old_port, new_port, next_port = free_port(), free_port(), free_port()
    engine = OCIEngine()
    try:
        conn = engine.clients.connect(oci_backend.host_spec())

        def publish(bp: Blueprint) -> Blueprint:  # what an earlier release did for a NAT rule
            bp.set_port_bindings({"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(old_port)}]})
            return bp

        containers.recreate(conn, dc.api.inspect_container(vm), publish)
    finally:
        engine.clients.close_all()
    legacy_id = dc.api.inspect_container(vm)["Id"]
    assert "hello" in http_get(old_port)

    rule = kit.api.post(kit.vm_path("natadd", vm), {"host_port": new_port, "vm_port": 80, "protocol": "tcp"})
    assert (rule["host_port"], rule["vm_port"]) == (new_port, 80)
    assert "message" not in rule  # the answer is the rule, as the contract says
    task = _last_task(kit, "nat_add", vm)
    assert (task["state"], task["progress"]) == ("success", 100), task
    assert "live forwarding" in task["message"] and "restarts once" in task["message"], task["message"]
    assert task["message"].startswith(f"{new_port}->80/tcp"), task["message"]
    moved = dc.api.inspect_container(vm)
    assert moved["Id"] != legacy_id  # the restart the message announced
    assert network.rules_of(moved) == []  # the container publishes nothing itself any more
    assert "hello" in http_get(new_port)

    kit.api.post(kit.vm_path("natadd", vm), {"host_port": next_port, "vm_port": 80, "protocol": "tcp"})
    live = _last_task(kit, "nat_add", vm)
    assert live["id"] != task["id"] and live["state"] == "success"
    assert live["message"] == f"{next_port}->80/tcp", live["message"]  # live: nothing restarted, nothing said
    assert dc.api.inspect_container(vm)["Id"] == moved["Id"]
    assert "hello" in http_get(next_port)

    index = next(r["rule_index"] for r in kit.api.get(kit.vm_path("natget", vm)) if r["host_port"] == next_port)
    kit.api.delete(kit.vm_path("natdel", vm, str(index)))
    removed = _last_task(kit, "nat_delete", vm)
    assert (removed["state"], removed["message"]) == ("success", f"{next_port}->80/tcp removed"), removed


def test_disk_tasks_state_the_recreation_and_keep_the_data(kit: Kit, dc: docker.DockerClient) -> None:
    vm = kit.create_vm("disks")
    port = free_port()
    kit.api.post(kit.vm_path("natadd", vm), {"host_port": port, "vm_port": 80, "protocol": "tcp"})
    mount = kit.vm_path("hdd/mount", vm)

    answer = kit.api.post(mount, {"hdd_name": "data", "hdd_size": 1})
    assert answer == {"hdd_name": "data", "hdd_size": 1, "mounted": True}
    added = _last_task(kit, "disk_add", vm)
    assert (added["state"], added["progress"]) == ("success", 100), added
    assert "the container is recreated to attach disk data" in added["message"], added["message"]
    assert "one restart" in added["message"], added["message"]
    assert " /mnt/data " in _mounts(dc, vm)
    sh(dc, vm, "echo kept > /mnt/data/f")
    assert "hello" in http_get(port)  # the forward followed the recreated container

    assert kit.api.post(mount, {"hdd_name": "data", "hdd_size": 1})["mounted"] is True  # attached: no task
    assert _task_count(kit, "disk_add", vm) == 1

    assert kit.api.post(kit.vm_path("hdd/unmount", vm), {"hdd_name": "data"})["mounted"] is False
    removed = _last_task(kit, "disk_remove", vm)
    assert removed["state"] == "success" and "the container is recreated to detach disk data" in removed["message"]
    assert " /mnt/data " not in _mounts(dc, vm)

    assert kit.api.post(mount, {"hdd_name": "data", "hdd_size": 1})["mounted"] is True
    assert sh(dc, vm, "cat /mnt/data/f").strip() == "kept"
    assert _task_count(kit, "disk_add", vm) == 2

    kit.api.delete(kit.vm_path("hdd/delete", vm), json={"hdd_name": "data"})
    deleted = _last_task(kit, "disk_delete", vm)
    assert deleted["state"] == "success", deleted
    assert deleted["message"].startswith("disk data deleted") and "recreated to detach" in deleted["message"]
    assert kit.api.get(kit.vm_path("hdd/detail", vm)) == []
    assert " /mnt/data " not in _mounts(dc, vm)
    assert not dc.api.volumes(filters={"name": naming.volume_name(vm, "data")})["Volumes"]
    assert "hello" in http_get(port)


def test_a_refused_disk_request_records_no_task_and_changes_nothing(kit: Kit, dc: docker.DockerClient) -> None:
    vm = kit.shared_vm()
    before = dc.api.inspect_container(vm)["Id"]
    kit.expect("POST", kit.vm_path("hdd/mount", vm), 400, {"hdd_name": "../etc", "hdd_size": 1})
    kit.expect("POST", kit.vm_path("hdd/unmount", vm), 404, {"hdd_name": "nosuch"})
    assert _task_count(kit, "disk_add", vm) == 0 and _task_count(kit, "disk_remove", vm) == 0
    assert kit.api.get(kit.vm_path("hdd/detail", vm)) == []
    assert dc.api.inspect_container(vm)["Id"] == before
