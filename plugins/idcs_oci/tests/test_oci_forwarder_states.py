"""Which VMs a host's container list shows with forwarders out of step (``forwarders.stale_vms``),
which a VM list then brings in step. A forwarder another process is opening (created with the VM's
address, not started yet) is not out of step: removing it would break that change (issue 19: an
API node's VM list removed the forwarder a worker was opening)."""

from __future__ import annotations

from typing import Any

from idcs_oci import forwarders, naming

BIND = ("127.0.0.1",)


def _vm(name: str, state: str = "running", addr: str = "172.18.0.2") -> dict[str, Any]:
    return {"Id": f"id-{name}", "Names": [f"/{name}"], "State": state, "Labels": {naming.VM_UUID: name},
            "NetworkSettings": {"Networks": {"idcs-test": {"IPAddress": addr}}}}


def _forwarder(vm: str, state: str, target: str, port: int = 41000) -> dict[str, Any]:
    return {"Id": f"fwd-{port}", "Names": [f"/{forwarders.container_name(port, 'tcp')}"], "State": state,
            "Labels": {naming.NAT_FORWARDER: "1", naming.NAT_HOST_PORT: str(port), naming.NAT_VM_PORT: "80",
                       naming.NAT_PROTOCOL: "tcp", naming.NAT_VM: vm, naming.NAT_TARGET: target,
                       naming.NAT_BIND: ",".join(BIND)}}


def test_a_forwarder_being_opened_is_not_out_of_step() -> None:
    items = [_vm("vm1"), _forwarder("vm1", "created", "172.18.0.2")]
    assert forwarders.stale_vms(items, BIND) == []


def test_forwarders_out_of_step_are_still_found() -> None:
    moved = [_vm("vm1", addr="172.18.0.9"), _forwarder("vm1", "running", "172.18.0.2")]
    assert forwarders.stale_vms(moved, BIND) == ["vm1"]
    exited = [_vm("vm1"), _forwarder("vm1", "exited", "172.18.0.2")]
    assert forwarders.stale_vms(exited, BIND) == ["vm1"]
    stopped_vm = [_vm("vm1", state="exited"), _forwarder("vm1", "running", "172.18.0.2")]
    assert forwarders.stale_vms(stopped_vm, BIND) == ["vm1"]
    in_step = [_vm("vm1"), _forwarder("vm1", "running", "172.18.0.2")]
    assert forwarders.stale_vms(in_step, BIND) == []
