"""VM lifecycle and power against a real dockerd: create, update, power, reinstall, delete, list."""

from __future__ import annotations

import time
import uuid

import docker
import pytest
from idcs_oci import naming
from idcs_oci.containers import no_progress
from idcs_oci.engine import OCIEngine
from idcs_oci.testing import DockerBackend, MakeVM, free_port, http_get, sh

from idcs_core import errors
from idcs_core.types import DiskSpec, HostSpec, NatRule, PowerAction, Progress, VMSpec


def test_create_runs_the_image_with_limits(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                           dc: docker.DockerClient, backend: DockerBackend) -> None:
    vm = make_vm(cpu_num=1, ram_num=64, hdd_num=3, vm_name="web one")
    assert vm.status == "running" and vm.power_state == "running"
    assert (vm.cpu_num, vm.ram_num, vm.os_name, vm.vm_name) == (1, 64, backend.image, "web one")
    # overlay2 on ext4 cannot limit the root disk: recorded, reported as not enforced.
    assert vm.hdd_num is None
    assert vm.extra["hdd_enforced"] is False and vm.extra["hdd_requested_gb"] == 3
    assert vm.ip_addresses

    attrs = dc.api.inspect_container(vm.vm_uuid)
    hc = attrs["HostConfig"]
    assert hc["Init"] is True and hc["NanoCpus"] == 10**9 and hc["Memory"] == 64 * 1024 * 1024
    assert hc["RestartPolicy"]["Name"] == "unless-stopped"
    labels = attrs["Config"]["Labels"]
    assert labels[naming.MANAGED] == "1" and labels[naming.VM_UUID] == vm.vm_uuid
    assert labels[naming.HDD_NUM] == "3" and labels[naming.HDD_ENFORCED] == "0"
    # The image's own CMD runs (httpd started by it) and the container stays up.
    time.sleep(0.3)
    assert "httpd" in sh(dc, vm.vm_uuid, "ps")
    assert sh(dc, vm.vm_uuid, "hostname").strip() == naming.hostname_for(vm.vm_uuid)
    # Inside, the memory limit is the cgroup's.
    limit = sh(dc, vm.vm_uuid, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null "
                               "|| cat /sys/fs/cgroup/memory.max")
    assert int(limit) == 64 * 1024 * 1024

    live = engine.vm_status(host=host, vm_uuid=vm.vm_uuid)
    assert live.status == "running"
    assert live.cpu_usage is not None and 0 <= live.cpu_usage <= 100
    assert live.memory_usage is not None and 0 < live.memory_usage <= 100
    ips = engine.vm_ip_list(host=host, vm_uuid=vm.vm_uuid)
    assert [ip.address for ip in ips] == live.ip_addresses and ips[0].nic == backend.network


def test_create_errors(engine: OCIEngine, host: HostSpec, make_vm: MakeVM, dc: docker.DockerClient,
                       backend: DockerBackend) -> None:
    vm = make_vm()
    with pytest.raises(errors.Conflict):
        make_vm(vm_uuid=vm.vm_uuid)
    missing = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(errors.BadRequest, match="no-such-image"):
        make_vm(vm_uuid=missing, os_name="no-such-image:1")
    with pytest.raises(errors.BadRequest, match="vm_uuid"):
        make_vm(vm_uuid="bad name/with slash")
    with pytest.raises(docker.errors.NotFound):
        dc.api.inspect_container(missing)


def test_failed_start_leaves_nothing(engine: OCIEngine, backend: DockerBackend,
                                     dc: docker.DockerClient) -> None:
    """Addresses are allocated at start: on a full network the start fails after the create."""
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.213.77.0/30")])
    net = dc.networks.create("idcs-tiny", driver="bridge", ipam=ipam)
    tiny = backend.host_spec(network="idcs-tiny")
    first, second = f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    try:
        engine.vm_create(host=tiny, spec=VMSpec(first, backend.image, 1, 64, 1), progress=print)
        with pytest.raises(errors.VMOperationFailed, match=r"(?i)no available ipv4"):
            engine.vm_create(host=tiny, spec=VMSpec(second, backend.image, 1, 64, 1), progress=print)
        with pytest.raises(docker.errors.NotFound):
            dc.api.inspect_container(second)
    finally:
        engine.vm_delete(host=tiny, vm_uuid=first, progress=print)
        net.remove()


def test_create_sets_initial_password(make_vm: MakeVM, dc: docker.DockerClient) -> None:
    vm = make_vm(config={"os_pass": "first-Pass1"})
    assert vm.extra["password_set"] is True
    assert not sh(dc, vm.vm_uuid, "grep '^root:' /etc/shadow").startswith("root:*:")


def test_power_actions(engine: OCIEngine, host: HostSpec, make_vm: MakeVM, dc: docker.DockerClient) -> None:
    vm = make_vm().vm_uuid

    def power(action: PowerAction) -> str:
        info = engine.vm_power(host=host, vm_uuid=vm, action=action)
        assert info.power_state == dc.api.inspect_container(vm)["State"]["Status"]
        return info.status

    started = time.monotonic()
    assert power(PowerAction.STOP) == "stopped"
    assert time.monotonic() - started < 3, "graceful stop must not wait for the kill timeout"
    assert power(PowerAction.STOP) == "stopped"
    assert power(PowerAction.START) == "running"
    assert power(PowerAction.START) == "running"  # starting a running VM is not an error
    assert power(PowerAction.PAUSE) == "paused"
    assert dc.api.inspect_container(vm)["State"]["Paused"] is True
    assert power(PowerAction.PAUSE) == "paused"
    assert power(PowerAction.RESUME) == "running"
    assert power(PowerAction.RESUME) == "running"
    before = dc.api.inspect_container(vm)["State"]["StartedAt"]
    assert power(PowerAction.RESET) == "running"
    assert dc.api.inspect_container(vm)["State"]["StartedAt"] != before
    assert power(PowerAction.PAUSE) == "paused"
    assert power(PowerAction.START) == "running"  # start of a paused VM resumes it
    assert power(PowerAction.HARD_OFF) == "stopped"
    time.sleep(1.0)  # the restart policy must not bring a VM back that was powered off
    assert dc.api.inspect_container(vm)["State"]["Status"] == "exited"
    assert power(PowerAction.HARD_OFF) == "stopped"
    with pytest.raises(errors.VMOperationFailed, match="only a running VM"):
        power(PowerAction.PAUSE)
    assert engine.vm_power(host=host, vm_uuid=vm, action="S_START").status == "running"
    with pytest.raises(errors.BadRequest):
        engine.vm_power(host=host, vm_uuid=vm, action="FLY")
    with pytest.raises(errors.VMNotFound):
        engine.vm_power(host=host, vm_uuid="t-missing", action=PowerAction.START)


def test_update_is_live(engine: OCIEngine, host: HostSpec, make_vm: MakeVM, dc: docker.DockerClient,
                        backend: DockerBackend, progress: Progress) -> None:
    vm = make_vm()
    before = dc.api.inspect_container(vm.vm_uuid)
    spec = VMSpec(vm.vm_uuid, backend.image, cpu_num=2, ram_num=256, hdd_num=1)
    info = engine.vm_update(host=host, spec=spec, progress=progress)
    assert (info.cpu_num, info.ram_num, info.status) == (2, 256, "running")
    after = dc.api.inspect_container(vm.vm_uuid)
    assert after["Id"] == before["Id"] and after["State"]["StartedAt"] == before["State"]["StartedAt"]
    assert after["HostConfig"]["NanoCpus"] == 2 * 10**9
    assert after["HostConfig"]["Memory"] == 256 * 1024 * 1024
    spec.ram_num = 32  # shrinking memory works live too
    assert engine.vm_update(host=host, spec=spec, progress=progress).ram_num == 32
    spec.cpu_num = 64  # more CPUs than the host has: Docker refuses, a bad request
    with pytest.raises(errors.BadRequest):
        engine.vm_update(host=host, spec=spec, progress=progress)


def test_reinstall_keeps_identity_drops_data(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                             dc: docker.DockerClient, backend: DockerBackend,
                                             progress: Progress) -> None:
    vm = make_vm().vm_uuid
    port = free_port()
    engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 80))
    engine.disk_attach(progress=no_progress, host=host, vm_uuid=vm, disk=DiskSpec("keep", 1))
    sh(dc, vm, "echo old > /root/f; echo disk > /mnt/keep/d")
    hostname = sh(dc, vm, "hostname")
    dc.api.tag(backend.image, "idcs-test/other", "2")
    try:
        spec = VMSpec(vm, "idcs-test/other:2", cpu_num=1, ram_num=96, hdd_num=1)
        info = engine.vm_reinstall(host=host, spec=spec, progress=progress)
        assert (info.status, info.os_name, info.ram_num) == ("running", "idcs-test/other:2", 96)
        assert "No such file" in dc.containers.get(vm).exec_run(["cat", "/root/f"]).output.decode()
        assert sh(dc, vm, "cat /mnt/keep/d").strip() == "disk"
        assert sh(dc, vm, "hostname") == hostname
        assert "hello" in http_get(port)
        assert not dc.images.list(name=naming.state_ref(vm).split(":")[0])
    finally:
        dc.api.remove_container(vm, force=True)
        dc.api.remove_image("idcs-test/other:2")


def test_delete_removes_everything_and_is_idempotent(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                                     dc: docker.DockerClient, progress: Progress) -> None:
    vm = make_vm().vm_uuid
    engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(free_port(), 80))  # a forwarder container
    engine.disk_attach(progress=no_progress, host=host, vm_uuid=vm, disk=DiskSpec("d1", 1))  # leaves a state image
    engine.vm_delete(host=host, vm_uuid=vm, progress=progress)
    assert not dc.api.containers(all=True, filters={"label": f"{naming.NAT_VM}={vm}"})
    with pytest.raises(docker.errors.NotFound):
        dc.api.inspect_container(vm)
    assert not dc.api.volumes(filters={"label": f"{naming.VM_UUID}={vm}"})["Volumes"]
    assert not dc.images.list(name=naming.state_ref(vm).split(":")[0])
    engine.vm_delete(host=host, vm_uuid=vm, progress=progress)
    with pytest.raises(errors.VMNotFound):
        engine.vm_status(host=host, vm_uuid=vm)


def test_vm_list_one_call(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                          dc: docker.DockerClient) -> None:
    a, b = make_vm(), make_vm()
    engine.vm_power(host=host, vm_uuid=b.vm_uuid, action=PowerAction.HARD_OFF)
    foreign = dc.containers.create("idcs-test/busybox:latest", name=f"t-foreign-{uuid.uuid4().hex[:6]}")
    try:
        listed = {v.vm_uuid: v for v in engine.vm_list(host=host)}
        assert listed[a.vm_uuid].status == "running" and listed[a.vm_uuid].extra["managed"]
        assert listed[b.vm_uuid].status == "stopped"
        assert listed[foreign.name].extra["managed"] is False
        assert listed[foreign.name].status == "stopped"
    finally:
        foreign.remove(force=True)


def test_shell_image_stops_at_once(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                   dc: docker.DockerClient) -> None:
    """An image whose CMD is a bare shell (like ubuntu's bash) runs it interactively; SIGHUP stops it."""
    from idcs_oci.testing import build_busybox_image

    build_busybox_image(dc, "idcs-test/shell:1", cmd=["/bin/sh"])
    vm = make_vm(os_name="idcs-test/shell:1").vm_uuid
    assert dc.api.inspect_container(vm)["Config"]["StopSignal"] == "SIGHUP"
    assert sh(dc, vm, "ps").count("/bin/sh") >= 1
    started = time.monotonic()
    assert engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.STOP).status == "stopped"
    assert time.monotonic() - started < 3
    assert engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.START).status == "running"
    time.sleep(0.5)
    assert dc.api.inspect_container(vm)["State"]["Status"] == "running"  # the shell stays up
