"""NAT through real forwarders: HTTP through the forward with the container untouched, conflicts
refused with nothing changed, the bind option, and the layer-flattening guard of recreations."""

from __future__ import annotations

import socket
from typing import Any

import docker
import pytest
from idcs_oci import forwarders, naming, network
from idcs_oci.containers import no_progress
from idcs_oci.engine import OCIEngine
from idcs_oci.testing import DockerBackend, MakeVM, free_port, http_get, sh

from idcs_core import errors
from idcs_core.types import HostSpec, NatRule, PowerAction


def _refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _forwarder(dc: docker.DockerClient, port: int, proto: str = "tcp") -> dict[str, Any]:
    return dc.api.inspect_container(forwarders.container_name(port, proto))


def _forwarded_ports(dc: docker.DockerClient, vm: str) -> set[tuple[int, str]]:
    items = dc.api.containers(all=True, filters={"label": f"{naming.NAT_VM}={vm}"})
    return {(int(i["Labels"][naming.NAT_HOST_PORT]), i["Labels"][naming.NAT_PROTOCOL]) for i in items}


def test_nat_is_live_and_idempotent(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                    dc: docker.DockerClient) -> None:
    vm = make_vm().vm_uuid
    sh(dc, vm, "echo kept-$HOSTNAME > /www/data.txt; echo in-memory > /tmp/m")
    hostname = sh(dc, vm, "hostname")
    before = dc.api.inspect_container(vm)
    port, port2, uport = free_port(), free_port(), free_port()

    rule = engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 80, "tcp"))
    assert (rule.host_port, rule.vm_port, rule.protocol) == (port, 80, "tcp")
    attrs = dc.api.inspect_container(vm)
    # Live: the same container, never restarted, nothing published by the container itself.
    assert (attrs["Id"], attrs["State"]["StartedAt"]) == (before["Id"], before["State"]["StartedAt"])
    assert network.rules_of(attrs) == []
    assert rule.lan_addr in engine.vm_status(host=host, vm_uuid=vm).ip_addresses
    assert http_get(port, "/data.txt").strip() == f"kept-{hostname.strip()}"
    assert sh(dc, vm, "cat /tmp/m").strip() == "in-memory"
    fwd = _forwarder(dc, port)
    assert fwd["HostConfig"]["NetworkMode"] == "host" and fwd["State"]["Running"]
    assert fwd["Config"]["Labels"][naming.NAT_TARGET] == rule.lan_addr

    # The same rule again changes nothing.
    engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 80, "tcp"))
    assert _forwarder(dc, port)["Id"] == fwd["Id"]
    # The same host port to another VM port of the same VM is a conflict.
    with pytest.raises(errors.Conflict):
        engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 22, "tcp"))

    engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port2, 80, "tcp"))
    engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(uport, 53, "udp"))
    assert http_get(port2, "/data.txt").startswith("kept-")
    assert _forwarded_ports(dc, vm) == {(port, "tcp"), (port2, "tcp"), (uport, "udp")}

    engine.nat_remove(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 80, "tcp"))
    assert _refused(port)
    assert http_get(port2, "/data.txt").startswith("kept-")
    engine.nat_remove(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 80, "tcp"))  # gone already: fine

    engine.nat_sync(host=host, vm_uuid=vm, rules=[NatRule(port, 80, "tcp")])
    assert _refused(port2)
    assert http_get(port, "/data.txt").startswith("kept-")
    assert _forwarded_ports(dc, vm) == {(port, "tcp")}
    synced = _forwarder(dc, port)["Id"]
    engine.nat_sync(host=host, vm_uuid=vm, rules=[NatRule(port, 80, "tcp")])  # already right: no-op
    assert _forwarder(dc, port)["Id"] == synced
    assert dc.api.inspect_container(vm)["Id"] == before["Id"]

    with pytest.raises(errors.BadRequest):
        engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port2, 80, "sctp"))
    with pytest.raises(errors.BadRequest):
        engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(70000, 80, "tcp"))
    with pytest.raises(errors.VMNotFound):
        engine.nat_add(progress=no_progress, host=host, vm_uuid="t-missing", rule=NatRule(port2, 80, "tcp"))
    assert _forwarded_ports(dc, vm) == {(port, "tcp")}  # refused requests changed nothing


def test_nat_keeps_power_state(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                               dc: docker.DockerClient) -> None:
    vm = make_vm().vm_uuid
    engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.PAUSE)
    engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(free_port(), 80))
    assert dc.api.inspect_container(vm)["State"]["Status"] == "paused"
    engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.HARD_OFF)
    port = free_port()
    engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(port, 80))
    assert engine.vm_status(host=host, vm_uuid=vm).status == "stopped"
    assert not _forwarder(dc, port)["State"]["Running"]  # parked until the VM has an address again
    engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.START)
    assert "hello" in http_get(port)


def test_port_taken_on_host_is_conflict_and_nothing_changes(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                                           dc: docker.DockerClient) -> None:
    vm = make_vm().vm_uuid
    sh(dc, vm, "echo precious > /root/data")
    before = dc.api.inspect_container(vm)
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(errors.Conflict, match=str(taken)):
            engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(taken, 80))
    after = dc.api.inspect_container(vm)
    assert after["Id"] == before["Id"] and after["State"]["StartedAt"] == before["State"]["StartedAt"]
    assert sh(dc, vm, "cat /root/data").strip() == "precious"
    assert _forwarded_ports(dc, vm) == set()  # the failed forwarder was removed
    # Once the port is free the same rule works.
    engine.nat_add(progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(taken, 80))
    assert "hello" in http_get(taken)


def test_port_published_by_another_vm_is_conflict(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                                  dc: docker.DockerClient) -> None:
    a, b = make_vm().vm_uuid, make_vm().vm_uuid
    port = free_port()
    engine.nat_add(progress=no_progress, host=host, vm_uuid=a, rule=NatRule(port, 80))
    b_id = dc.api.inspect_container(b)["Id"]
    with pytest.raises(errors.Conflict, match=a):
        engine.nat_add(progress=no_progress, host=host, vm_uuid=b, rule=NatRule(port, 80))
    assert dc.api.inspect_container(b)["Id"] == b_id  # refused before any recreation


def test_port_of_a_stopped_container_is_conflict(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                                 dc: docker.DockerClient, backend: DockerBackend) -> None:
    """A stopped container's published port is still booked: it takes the port back when it starts."""
    a, b = make_vm().vm_uuid, make_vm().vm_uuid
    port, port2 = free_port(), free_port()
    engine.nat_add(progress=no_progress, host=host, vm_uuid=a, rule=NatRule(port, 80))
    engine.vm_power(host=host, vm_uuid=a, action=PowerAction.STOP)
    b_id = dc.api.inspect_container(b)["Id"]
    with pytest.raises(errors.Conflict, match=a):
        engine.nat_add(progress=no_progress, host=host, vm_uuid=b, rule=NatRule(port, 80))
    assert dc.api.inspect_container(b)["Id"] == b_id  # refused before any recreation
    # A container never started, not made by OpenIDCS, with a binding of its own: the same.
    other = dc.api.create_container(backend.image, ports=[80], host_config=dc.api.create_host_config(
        port_bindings={80: ("0.0.0.0", port2)}))["Id"]
    try:
        with pytest.raises(errors.Conflict, match=str(port2)):
            engine.nat_sync(host=host, vm_uuid=b, rules=[NatRule(port2, 80)])
    finally:
        dc.api.remove_container(other, force=True)
    # The stopped VM starts again with its port, which was never given away.
    engine.vm_power(host=host, vm_uuid=a, action=PowerAction.START)
    assert "hello" in http_get(port)


def test_nat_bind_option(engine: OCIEngine, backend: DockerBackend, make_vm: MakeVM,
                         dc: docker.DockerClient) -> None:
    loopback = backend.host_spec(nat_bind="127.0.0.1")
    vm = make_vm().vm_uuid
    port = free_port()
    engine.nat_add(progress=no_progress, host=loopback, vm_uuid=vm, rule=NatRule(port, 80))
    assert _forwarder(dc, port)["Config"]["Labels"][naming.NAT_BIND] == "127.0.0.1"
    assert "hello" in http_get(port)
    # A host whose nat_bind changed: sync re-makes the forwarder on the new address, VM untouched.
    vm_id = dc.api.inspect_container(vm)["Id"]
    engine.nat_sync(host=backend.host_spec(), vm_uuid=vm, rules=[NatRule(port, 80)])
    assert _forwarder(dc, port)["Config"]["Labels"][naming.NAT_BIND] == "0.0.0.0"
    assert dc.api.inspect_container(vm)["Id"] == vm_id
    assert "hello" in http_get(port)


def test_deep_history_is_flattened(engine: OCIEngine, backend: DockerBackend, make_vm: MakeVM,
                                   dc: docker.DockerClient) -> None:
    """Disk changes still recreate the container (Docker cannot add a mount to a running one)."""
    from idcs_core.types import DiskSpec

    shallow = backend.host_spec(max_layers=3)
    vm = make_vm().vm_uuid
    port = free_port()
    engine.nat_add(progress=no_progress, host=shallow, vm_uuid=vm, rule=NatRule(port, 80))
    for i in range(4):
        sh(dc, vm, f"echo {i} > /root/gen{i}")
        if i % 2:
            engine.disk_detach(progress=no_progress, host=shallow, vm_uuid=vm, disk_name="d")
        else:
            engine.disk_attach(progress=no_progress, host=shallow, vm_uuid=vm, disk=DiskSpec("d", 1))
        image = dc.api.inspect_image(dc.api.inspect_container(vm)["Image"])
        assert len(image["RootFS"]["Layers"]) <= 3
    assert sh(dc, vm, "cat /root/gen0 /root/gen1 /root/gen2 /root/gen3").split() == ["0", "1", "2", "3"]
    assert "hello" in http_get(port)  # the forward followed the recreated container's address
    # The flattened image has no config of its own: the container kept its command and init.
    attrs = dc.api.inspect_container(vm)
    assert attrs["HostConfig"]["Init"] is True and "httpd" in " ".join(attrs["Config"]["Cmd"])


def test_concurrent_changes_of_one_vm_all_apply(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                                dc: docker.DockerClient) -> None:
    """Two NAT rules and a disk requested at once: all apply, the forwards follow the recreation."""
    from concurrent.futures import ThreadPoolExecutor

    from idcs_core.types import DiskSpec

    vm = make_vm().vm_uuid
    sh(dc, vm, "echo mine > /www/m.txt")
    p1, p2 = free_port(), free_port()
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(engine.nat_add, progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(p1, 80)),
                   pool.submit(engine.nat_add, progress=no_progress, host=host, vm_uuid=vm, rule=NatRule(p2, 80)),
                   pool.submit(engine.disk_attach, progress=no_progress, host=host, vm_uuid=vm, disk=DiskSpec("c", 1))]
        for f in futures:
            f.result()
    assert http_get(p1, "/m.txt").strip() == "mine"
    assert http_get(p2, "/m.txt").strip() == "mine"
    assert " /mnt/c " in sh(dc, vm, "cat /proc/mounts")
