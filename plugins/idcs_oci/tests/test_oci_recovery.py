"""A recreation cut short (the control plane died while the old container was parked as
``<vm>.idcs-old-<hex>[-running]``): the crash state is made directly on the daemon, and the
engine's next call brings the VM back; delete removes parked leftovers."""

from __future__ import annotations

import docker
import pytest
from idcs_oci.containers import no_progress
from idcs_oci.engine import OCIEngine, vm_lock
from idcs_oci.testing import DockerBackend, MakeVM, free_port, http_get, sh

from idcs_core.types import HostSpec, NatRule


def _crash(dc: docker.DockerClient, vm: str, suffix: str = "-running", tag: str = "a1b2c3") -> str:
    """What ``containers.recreate`` leaves when the process dies right after parking: the old
    container stopped and renamed aside, no container under the VM's name."""
    dc.api.stop(vm, timeout=5)
    parked = f"{vm}.idcs-old-{tag}{suffix}"
    dc.api.rename(vm, parked)
    return parked


def _names(dc: docker.DockerClient, vm: str) -> list[str]:
    return sorted(n.lstrip("/") for c in dc.api.containers(all=True) for n in c["Names"]
                  if n.lstrip("/").startswith(vm))


@pytest.mark.parametrize(("suffix", "state"), [("-running", "running"), ("-paused", "paused"), ("", "stopped")],
                         ids=["was-running", "was-paused", "legacy-name"])
def test_status_brings_a_parked_vm_back(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                        dc: docker.DockerClient, suffix: str, state: str) -> None:
    vm = make_vm().vm_uuid
    sh(dc, vm, "echo precious > /root/data")
    cid = dc.api.inspect_container(vm)["Id"]
    _crash(dc, vm, suffix)

    info = engine.vm_status(host=host, vm_uuid=vm)
    assert info.vm_uuid == vm and info.status == state  # the power state the parked name recorded
    assert dc.api.inspect_container(vm)["Id"] == cid  # the very container, not a new one
    assert _names(dc, vm) == [vm]
    if state != "running":
        dc.api.unpause(vm) if state == "paused" else dc.api.start(vm)
    assert sh(dc, vm, "cat /root/data").strip() == "precious"


def test_list_shows_and_restores_a_parked_vm(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                             dc: docker.DockerClient) -> None:
    vm, other = make_vm().vm_uuid, make_vm().vm_uuid
    _crash(dc, vm)
    listed = {v.vm_uuid: v for v in engine.vm_list(host=host)}
    assert listed[vm].status == "running" and other in listed
    assert not any(".idcs-old-" in name for name in listed)
    assert _names(dc, vm) == [vm]


def test_any_call_restores_a_parked_vm(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                       dc: docker.DockerClient) -> None:
    vm = make_vm().vm_uuid
    sh(dc, vm, "echo nat-after-crash > /www/index.html")
    _crash(dc, vm)
    port = free_port()
    engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 80))  # a change, under the VM's lock
    assert http_get(port).strip() == "nat-after-crash"
    assert _names(dc, vm) == [vm]


def test_crash_after_the_replacement_was_made(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                              dc: docker.DockerClient, backend: DockerBackend) -> None:
    """Died between creating the new container and starting it: the new one is kept (started, as
    the old one ran) and the parked one removed."""
    vm = make_vm().vm_uuid
    _crash(dc, vm)
    new_id = dc.api.create_container(backend.image, name=vm, host_config=dc.api.create_host_config(init=True))["Id"]
    assert [v.status for v in engine.vm_list(host=host) if v.vm_uuid == vm] == ["running"]
    assert dc.api.inspect_container(vm)["Id"] == new_id
    assert _names(dc, vm) == [vm]


def test_delete_removes_parked_leftovers(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                         dc: docker.DockerClient, backend: DockerBackend) -> None:
    vm = make_vm().vm_uuid
    _crash(dc, vm)
    dc.api.create_container(backend.image, name=f"{vm}.idcs-old-0f0f0f")  # an older one as well
    engine.vm_delete(host=host, vm_uuid=vm, progress=lambda *a: None)
    assert _names(dc, vm) == []
    # The VM's container and a parked one side by side: both go.
    vm2 = make_vm().vm_uuid
    dc.api.create_container(backend.image, name=f"{vm2}.idcs-old-abcdef-running")
    engine.vm_delete(host=host, vm_uuid=vm2, progress=lambda *a: None)
    assert _names(dc, vm2) == []


def test_a_recreation_under_way_is_left_alone(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                              dc: docker.DockerClient) -> None:
    """While the VM's lock is held (a recreation is running), its parked container is normal: the
    list neither shows nor touches it. Once the lock is free, the next list recovers it."""
    vm = make_vm().vm_uuid
    with vm_lock(host, vm):
        parked = _crash(dc, vm)
        assert vm not in {v.vm_uuid for v in engine.vm_list(host=host)}
        assert _names(dc, vm) == [parked]
    assert vm in {v.vm_uuid for v in engine.vm_list(host=host)}
    assert _names(dc, vm) == [vm]
