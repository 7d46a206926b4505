"""NAT through real published ports: HTTP through the forward, data kept across recreations,
conflicts rolled back, and the layer-flattening guard."""

from __future__ import annotations

import socket
import urllib.error

import docker
import pytest
from idcs_oci import naming
from idcs_oci.engine import OCIEngine
from idcs_oci.testing import DockerBackend, MakeVM, free_port, http_get, sh

from idcs_core import errors
from idcs_core.types import HostSpec, NatRule, PowerAction


def _refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_nat_forwards_and_keeps_data(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                     dc: docker.DockerClient) -> None:
    vm = make_vm().vm_uuid
    sh(dc, vm, "echo kept-$HOSTNAME > /www/data.txt; mkdir -p /root/deep/dir; echo x > /root/deep/dir/f; "
               "rm /www/index.html")
    hostname = sh(dc, vm, "hostname")
    first_id = dc.api.inspect_container(vm)["Id"]
    port, port2, uport = free_port(), free_port(), free_port()

    rule = engine.nat_add(host=host, vm_uuid=vm, rule=NatRule(port, 80, "tcp"))
    assert (rule.host_port, rule.vm_port, rule.protocol) == (port, 80, "tcp")
    attrs = dc.api.inspect_container(vm)
    assert attrs["Id"] != first_id  # recreated: Docker cannot publish on an existing container
    assert rule.lan_addr in engine.vm_status(host=host, vm_uuid=vm).ip_addresses
    # A real HTTP request through the forward reaches httpd in the container, serving the file
    # written before the recreation; the deletion of index.html survived too.
    assert http_get(port, "/data.txt").strip() == f"kept-{hostname.strip()}"
    with pytest.raises(urllib.error.HTTPError):
        http_get(port, "/index.html")
    assert sh(dc, vm, "cat /root/deep/dir/f").strip() == "x"
    assert sh(dc, vm, "hostname") == hostname
    assert attrs["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}
    assert attrs["Config"]["Image"] == naming.state_ref(vm)  # made from its own committed filesystem
    assert not [c for c in dc.api.containers(all=True) if any(".idcs-old-" in n for n in c["Names"])]

    # The same rule again changes nothing (no recreation).
    engine.nat_add(host=host, vm_uuid=vm, rule=NatRule(port, 80, "tcp"))
    assert dc.api.inspect_container(vm)["Id"] == attrs["Id"]
    # The same host port to another VM port of the same VM is a conflict.
    with pytest.raises(errors.Conflict):
        engine.nat_add(host=host, vm_uuid=vm, rule=NatRule(port, 22, "tcp"))

    engine.nat_add(host=host, vm_uuid=vm, rule=NatRule(port2, 80, "tcp"))
    engine.nat_add(host=host, vm_uuid=vm, rule=NatRule(uport, 53, "udp"))
    assert http_get(port2, "/data.txt").startswith("kept-")
    bindings = dc.api.inspect_container(vm)["HostConfig"]["PortBindings"]
    assert {b["HostPort"] for b in bindings["80/tcp"]} == {str(port), str(port2)}
    assert bindings["53/udp"] == [{"HostIp": "0.0.0.0", "HostPort": str(uport)}]

    engine.nat_remove(host=host, vm_uuid=vm, rule=NatRule(port, 80, "tcp"))
    assert _refused(port)
    assert http_get(port2, "/data.txt").startswith("kept-")
    engine.nat_remove(host=host, vm_uuid=vm, rule=NatRule(port, 80, "tcp"))  # gone already: fine

    engine.nat_sync(host=host, vm_uuid=vm, rules=[NatRule(port, 80, "tcp")])
    assert _refused(port2)
    assert http_get(port, "/data.txt").startswith("kept-")
    assert set(dc.api.inspect_container(vm)["HostConfig"]["PortBindings"]) == {"80/tcp"}
    synced_id = dc.api.inspect_container(vm)["Id"]
    engine.nat_sync(host=host, vm_uuid=vm, rules=[NatRule(port, 80, "tcp")])  # already right: no-op
    assert dc.api.inspect_container(vm)["Id"] == synced_id

    with pytest.raises(errors.BadRequest):
        engine.nat_add(host=host, vm_uuid=vm, rule=NatRule(port2, 80, "sctp"))
    with pytest.raises(errors.BadRequest):
        engine.nat_add(host=host, vm_uuid=vm, rule=NatRule(70000, 80, "tcp"))
    with pytest.raises(errors.VMNotFound):
        engine.nat_add(host=host, vm_uuid="t-missing", rule=NatRule(port2, 80, "tcp"))


def test_nat_keeps_power_state(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                               dc: docker.DockerClient) -> None:
    vm = make_vm().vm_uuid
    engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.PAUSE)
    engine.nat_add(host=host, vm_uuid=vm, rule=NatRule(free_port(), 80))
    assert dc.api.inspect_container(vm)["State"]["Status"] == "paused"
    engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.HARD_OFF)
    port = free_port()
    engine.nat_add(host=host, vm_uuid=vm, rule=NatRule(port, 80))
    assert dc.api.inspect_container(vm)["State"]["Status"] == "created"
    assert engine.vm_status(host=host, vm_uuid=vm).status == "stopped"
    engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.START)
    assert "hello" in http_get(port)


def test_port_taken_on_host_is_conflict_and_rolled_back(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
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
            engine.nat_add(host=host, vm_uuid=vm, rule=NatRule(taken, 80))
    after = dc.api.inspect_container(vm)
    # The old container is back: same id, same name, running, data intact, no ports, nothing left over.
    assert after["Id"] == before["Id"] and after["Name"] == f"/{vm}"
    assert after["State"]["Status"] == "running"
    assert not after["HostConfig"]["PortBindings"]
    assert sh(dc, vm, "cat /root/data").strip() == "precious"
    assert not [c for c in dc.api.containers(all=True) if any(".idcs-old-" in n for n in c["Names"])]


def test_port_published_by_another_vm_is_conflict(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                                  dc: docker.DockerClient) -> None:
    a, b = make_vm().vm_uuid, make_vm().vm_uuid
    port = free_port()
    engine.nat_add(host=host, vm_uuid=a, rule=NatRule(port, 80))
    b_id = dc.api.inspect_container(b)["Id"]
    with pytest.raises(errors.Conflict, match=a):
        engine.nat_add(host=host, vm_uuid=b, rule=NatRule(port, 80))
    assert dc.api.inspect_container(b)["Id"] == b_id  # refused before any recreation


def test_port_of_a_stopped_container_is_conflict(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                                 dc: docker.DockerClient, backend: DockerBackend) -> None:
    """A stopped container's published port is still booked: it takes the port back when it starts."""
    a, b = make_vm().vm_uuid, make_vm().vm_uuid
    port, port2 = free_port(), free_port()
    engine.nat_add(host=host, vm_uuid=a, rule=NatRule(port, 80))
    engine.vm_power(host=host, vm_uuid=a, action=PowerAction.STOP)
    b_id = dc.api.inspect_container(b)["Id"]
    with pytest.raises(errors.Conflict, match=a):
        engine.nat_add(host=host, vm_uuid=b, rule=NatRule(port, 80))
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
    engine.nat_add(host=loopback, vm_uuid=vm, rule=NatRule(port, 80))
    assert dc.api.inspect_container(vm)["HostConfig"]["PortBindings"]["80/tcp"] == [
        {"HostIp": "127.0.0.1", "HostPort": str(port)}]
    assert "hello" in http_get(port)
    # A host whose nat_bind changed: sync rebinds the same rules on the new address.
    engine.nat_sync(host=backend.host_spec(), vm_uuid=vm, rules=[NatRule(port, 80)])
    assert dc.api.inspect_container(vm)["HostConfig"]["PortBindings"]["80/tcp"][0]["HostIp"] == "0.0.0.0"


def test_deep_history_is_flattened(engine: OCIEngine, backend: DockerBackend, make_vm: MakeVM,
                                   dc: docker.DockerClient) -> None:
    shallow = backend.host_spec(max_layers=3)
    vm = make_vm().vm_uuid
    ports = [free_port() for _ in range(4)]
    for i, port in enumerate(ports):
        sh(dc, vm, f"echo {i} > /root/gen{i}")
        engine.nat_sync(host=shallow, vm_uuid=vm, rules=[NatRule(port, 80)])
        image = dc.api.inspect_image(dc.api.inspect_container(vm)["Image"])
        assert len(image["RootFS"]["Layers"]) <= 3
    assert sh(dc, vm, "cat /root/gen0 /root/gen1 /root/gen2 /root/gen3").split() == ["0", "1", "2", "3"]
    assert "hello" in http_get(ports[-1])
    # The flattened image has no config of its own: the container kept its command and init.
    attrs = dc.api.inspect_container(vm)
    assert attrs["HostConfig"]["Init"] is True and "httpd" in " ".join(attrs["Config"]["Cmd"])


def test_concurrent_changes_of_one_vm_all_apply(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                                dc: docker.DockerClient) -> None:
    """Two NAT rules and a disk requested at once: each recreation sees the previous one's result."""
    from concurrent.futures import ThreadPoolExecutor

    from idcs_core.types import DiskSpec

    vm = make_vm().vm_uuid
    sh(dc, vm, "echo mine > /www/m.txt")
    p1, p2 = free_port(), free_port()
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(engine.nat_add, host=host, vm_uuid=vm, rule=NatRule(p1, 80)),
                   pool.submit(engine.nat_add, host=host, vm_uuid=vm, rule=NatRule(p2, 80)),
                   pool.submit(engine.disk_attach, host=host, vm_uuid=vm, disk=DiskSpec("c", 1))]
        for f in futures:
            f.result()
    assert http_get(p1, "/m.txt").strip() == "mine"
    assert http_get(p2, "/m.txt").strip() == "mine"
    assert " /mnt/c " in sh(dc, vm, "cat /proc/mounts")
