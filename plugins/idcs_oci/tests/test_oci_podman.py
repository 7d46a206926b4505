"""The same engine against Podman's Docker-compatible API (a private rootful ``podman system
service`` for the session, see ``idcs_oci.testing.podman_backend``): host hooks, and a VM's
life through create, NAT, power, terminal, recovery and delete."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
from idcs_oci import naming
from idcs_oci.containers import no_progress
from idcs_oci.engine import OCIEngine
from idcs_oci.testing import DockerBackend, free_port, http_get, sh

from idcs_core import errors
from idcs_core.types import DiskSpec, HostSpec, NatRule, PowerAction, VMInfo, VMSpec


def _quiet(percent: int, message: str = "") -> None:
    pass


@pytest.fixture(scope="module")
def pod(podman_service: DockerBackend) -> DockerBackend:
    return podman_service


@pytest.fixture(scope="module")
def pengine() -> Iterator[OCIEngine]:
    e = OCIEngine()
    yield e
    e.clients.close_all()


@pytest.fixture(scope="module")
def phost(pod: DockerBackend) -> HostSpec:
    return pod.host_spec("podman-test")


@pytest.fixture(scope="module")
def pdc(pod: DockerBackend) -> Iterator[docker.DockerClient]:
    c = pod.client()
    yield c
    c.close()


@pytest.fixture
def make_pvm(pengine: OCIEngine, phost: HostSpec, pod: DockerBackend) -> Iterator[Callable[..., VMInfo]]:
    made: list[str] = []

    def make(**overrides: Any) -> VMInfo:
        fields: dict[str, Any] = {"vm_uuid": f"p-{uuid.uuid4().hex[:10]}", "os_name": pod.image,
                                  "cpu_num": 1, "ram_num": 64, "hdd_num": 1, **overrides}
        made.append(fields["vm_uuid"])
        return pengine.vm_create(host=phost, spec=VMSpec(**fields), progress=_quiet)

    yield make
    for vm in made:
        with contextlib.suppress(errors.IDCSError):
            pengine.vm_delete(host=phost, vm_uuid=vm, progress=_quiet)


def test_podman_connect_and_status(pengine: OCIEngine, phost: HostSpec, pod: DockerBackend,
                                   make_pvm: Callable[..., VMInfo]) -> None:
    status = pengine.host_connect(host=phost)
    assert status.online and status.extra["engine"] == "podman"  # not "docker", though /info looks alike
    assert status.version and status.version.startswith("4.")
    assert status.extra["local"] is True
    for value in (status.cpu_usage, status.memory_usage, status.disk_usage):
        assert value is not None and 0.0 <= value <= 100.0
    assert status.extra["docker_root_dir"].startswith(str(pod.daemon.base))
    before = pengine.host_status(host=phost).vms_count
    make_pvm()
    assert pengine.host_status(host=phost).vms_count == before + 1


def test_podman_os_images(pengine: OCIEngine, phost: HostSpec, pod: DockerBackend) -> None:
    found = {i.file: i for i in pengine.os_images(host=phost)}
    # Podman names local images docker.io/...: the engine lists Docker's short name, one a VM can be made from.
    ref = pod.image
    assert found[ref].family == "busybox"
    vm = f"p-{uuid.uuid4().hex[:10]}"
    try:
        info = pengine.vm_create(host=phost, spec=VMSpec(vm_uuid=vm, os_name=ref, cpu_num=1, ram_num=64,
                                                         hdd_num=1), progress=_quiet)
        assert info.status == "running"
    finally:
        pengine.vm_delete(host=phost, vm_uuid=vm, progress=_quiet)


def test_podman_vm_life(pengine: OCIEngine, phost: HostSpec, pdc: docker.DockerClient,
                        make_pvm: Callable[..., VMInfo]) -> None:
    vm = make_pvm(vm_name="pod one").vm_uuid
    attrs = pdc.api.inspect_container(vm)
    hc = attrs["HostConfig"]
    assert (hc["Init"], hc["NanoCpus"], hc["Memory"]) == (True, 10**9, 64 * 1024 * 1024)
    assert attrs["Config"]["Labels"][naming.VM_UUID] == vm
    listed = {v.vm_uuid: v for v in pengine.vm_list(host=phost)}
    assert listed[vm].status == "running" and listed[vm].vm_name == "pod one"
    sh(pdc, vm, "echo kept-on-podman > /www/data.txt")

    # NAT is live on Podman too: the same container, its files and processes untouched.
    port, port2 = free_port(), free_port()
    rule = pengine.nat_add(progress=no_progress, host=phost, vm_uuid=vm, rule=NatRule(port, 80))
    assert rule.lan_addr in pengine.vm_status(host=phost, vm_uuid=vm).ip_addresses
    assert pdc.api.inspect_container(vm)["Id"] == attrs["Id"]
    assert http_get(port, "/data.txt").strip() == "kept-on-podman"
    pengine.nat_add(progress=no_progress, host=phost, vm_uuid=vm, rule=NatRule(port2, 80))
    assert http_get(port2, "/data.txt").strip() == "kept-on-podman"
    pengine.nat_remove(progress=no_progress, host=phost, vm_uuid=vm, rule=NatRule(port2, 80))
    hc = pdc.api.inspect_container(vm)["HostConfig"]
    assert (hc["NanoCpus"], hc["Memory"]) == (10**9, 64 * 1024 * 1024)
    assert not [c for c in pdc.api.containers(all=True) if any(".idcs-old-" in n for n in c["Names"])]

    # Power: a stop keeps its port booked; start brings the service back on it.
    assert pengine.vm_power(host=phost, vm_uuid=vm, action=PowerAction.STOP).status == "stopped"
    other = make_pvm().vm_uuid
    with pytest.raises(errors.Conflict, match=vm):
        pengine.nat_add(progress=no_progress, host=phost, vm_uuid=other, rule=NatRule(port, 80))
    assert pengine.vm_power(host=phost, vm_uuid=vm, action=PowerAction.START).status == "running"
    assert http_get(port, "/data.txt").strip() == "kept-on-podman"
    assert pengine.vm_power(host=phost, vm_uuid=vm, action=PowerAction.PAUSE).status == "paused"
    assert pengine.vm_power(host=phost, vm_uuid=vm, action=PowerAction.RESUME).status == "running"

    pengine.vm_delete(host=phost, vm_uuid=vm, progress=_quiet)
    with pytest.raises(errors.VMNotFound):
        pengine.vm_status(host=phost, vm_uuid=vm)
    assert not [c for c in pdc.api.containers(all=True) if any(n.lstrip("/").startswith(vm) for n in c["Names"])]
    assert not [i for i in pdc.images.list() if any(naming.state_ref(vm) in t for t in i.tags)]
    pengine.vm_delete(host=phost, vm_uuid=vm, progress=_quiet)  # again: fine


def test_podman_terminal_and_password(pengine: OCIEngine, phost: HostSpec, pdc: docker.DockerClient,
                                      make_pvm: Callable[..., VMInfo]) -> None:
    vm = make_pvm().vm_uuid
    pengine.vm_set_password(host=phost, vm_uuid=vm, username="root", password="Pod-Secret-1")
    assert sh(pdc, vm, "grep '^root:' /etc/shadow").split(":")[1].startswith("$6$")
    term = pengine.vm_terminal_open(host=phost, vm_uuid=vm, cols=80, rows=24)
    try:
        term.write(b"echo pid-$((40 + 2))-$$-end\n")
        seen, deadline = b"", time.monotonic() + 10
        while not (found := re.search(rb"pid-42-(\d+)-end", seen)):
            assert time.monotonic() < deadline, seen
            seen += term.read()
        pid = int(found.group(1))
    finally:
        term.close()
    deadline = time.monotonic() + 10
    while pdc.containers.get(vm).exec_run(["test", "-d", f"/proc/{pid}"])[0] == 0:
        assert time.monotonic() < deadline, "the terminal's shell outlived close()"
        time.sleep(0.1)


def test_podman_parked_vm_comes_back(pengine: OCIEngine, phost: HostSpec, pdc: docker.DockerClient,
                                     make_pvm: Callable[..., VMInfo]) -> None:
    vm = make_pvm().vm_uuid
    cid = pdc.api.inspect_container(vm)["Id"]
    pdc.api.stop(vm, timeout=5)
    pdc.api.rename(vm, f"{vm}.idcs-old-c0ffee-running")
    assert pengine.vm_status(host=phost, vm_uuid=vm).status == "running"
    assert pdc.api.inspect_container(vm)["Id"] == cid


def test_podman_update_disks_backups_reinstall(pengine: OCIEngine, phost: HostSpec, pdc: docker.DockerClient,
                                               pod: DockerBackend, make_pvm: Callable[..., VMInfo]) -> None:
    """What needed Podman-specific handling: no update endpoint (the container is recreated with
    the new limits), commit ignoring the labels in the body, ``localhost/`` in image names, and
    a "bridge" network mode for a named network."""
    vm = make_pvm(vm_name="pod two").vm_uuid
    sh(pdc, vm, "echo before > /root/f")
    info = pengine.vm_update(host=phost, spec=VMSpec(vm_uuid=vm, os_name=pod.image, cpu_num=2, ram_num=128,
                                                     hdd_num=1), progress=_quiet)
    assert (info.cpu_num, info.ram_num, info.status) == (2, 128, "running")
    assert sh(pdc, vm, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes").strip() == str(128 * 1024 * 1024)
    assert sh(pdc, vm, "cat /root/f").strip() == "before"

    pengine.disk_attach(progress=no_progress, host=phost, vm_uuid=vm, disk=DiskSpec(name="d1", size_gb=1))
    sh(pdc, vm, "echo on-disk > /mnt/d1/g")
    backup = pengine.backup_create(host=phost, vm_uuid=vm, backup_name="b 1", description='it\'s "one"',
                                   progress=_quiet)
    assert (backup.backup_name, backup.vm_uuid, backup.description) == ("b 1", vm, 'it\'s "one"')
    assert [(b.backup_name, b.description) for b in pengine.backup_list(host=phost) if b.vm_uuid == vm] == \
        [("b 1", 'it\'s "one"')]
    assert not [i for i in pengine.os_images(host=phost) if "idcs-backup/" in i.file or "idcs-state/" in i.file]
    sh(pdc, vm, "echo after > /root/f")
    restored = pengine.backup_restore(host=phost, vm_uuid=vm, backup_name="b 1", progress=_quiet)
    assert restored.status == "running" and restored.vm_name == "pod two"
    assert sh(pdc, vm, "cat /root/f /mnt/d1/g").split() == ["before", "on-disk"]
    pengine.disk_detach(progress=no_progress, host=phost, vm_uuid=vm, disk_name="d1")

    reinstalled = pengine.vm_reinstall(host=phost, spec=VMSpec(vm_uuid=vm, os_name=pod.image, cpu_num=1, ram_num=64,
                                                               hdd_num=1), progress=_quiet)
    assert reinstalled.status == "running" and reinstalled.ip_addresses
    assert pdc.containers.get(vm).exec_run(["cat", "/root/f"])[0] != 0  # a fresh filesystem
    pengine.backup_delete(host=phost, vm_uuid=vm, backup_name="b 1")
    assert not [b for b in pengine.backup_list(host=phost) if b.vm_uuid == vm]
