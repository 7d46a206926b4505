"""The VmwareWork engine's own behaviour, hook by hook, against the vmrest stand-in (not a real Workstation)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from idcs_vmware import client
from idcs_vmware.engine import VmwareEngine
from vmrest_standin.launch import TEMPLATE, StandIn
from vmrest_standin.server import GUEST_BODY, GUEST_HTTP_PORT

from idcs_core import errors
from idcs_core.services.rfb import connect_vnc
from idcs_core.testing.backends import free_port
from idcs_core.testing.kit_support import fetch_through, stops_serving
from idcs_core.types import HostSpec, NatRule, PowerAction, VMSpec

ENGINE = VmwareEngine()
# 10 s per answer: the stand-in's power off stops a guest's httpd and Xvnc, which can take
# seconds on a loaded machine (the frozen-host test sets its own 2 s)
OPTIONS = {"vnc_ports": "47200-47299", "timeout": 10}


def _progress(percent: int, message: str = "") -> None:
    pass


def host_of(vmrest: StandIn, timeout: int | None = None, **changes: str) -> HostSpec:
    fields = {"name": "vmware-engine-test", "server_type": "VmwareWork", "addr": vmrest.url, "user": vmrest.user,
              "password": vmrest.password, **changes}
    options: dict[str, object] = dict(OPTIONS)
    if timeout is not None:
        options["timeout"] = timeout
    return HostSpec(options=options, **fields)


@pytest.fixture
async def vm(vmrest: StandIn) -> AsyncIterator[str]:
    """A VM made by the engine for one test, running; deleted afterwards."""
    name = f"vmware-t-{os.urandom(3).hex()}"
    host = host_of(vmrest)
    await ENGINE.vm_create(host=host, spec=VMSpec(name, TEMPLATE, 1, 256, 1), progress=_progress)
    await ENGINE.vm_power(host=host, vm_uuid=name, ref=name, action=PowerAction.START)
    yield name
    await ENGINE.vm_delete(host=host, vm_uuid=name, ref=name)


async def test_bad_password_is_a_clear_1003_without_the_password(vmrest: StandIn,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wrong-" + os.urandom(6).hex()
    with pytest.raises(errors.HostUnreachable) as caught:
        await ENGINE.host_connect(host=host_of(vmrest, password=wrong))
    assert "refused the credentials" in caught.value.msg and "401" in caught.value.msg
    assert wrong not in caught.value.msg and wrong not in caplog.text
    assert vmrest.password not in caplog.text


async def test_host_status_counts_vms_but_not_templates(vmrest: StandIn, vm: str) -> None:
    status = await ENGINE.host_status(host=host_of(vmrest))
    listed = vmrest.call("GET", "/api/vms").json()
    assert status.online and status.vms_count == len(listed) - 1 and status.extra["templates"] == 1
    images = await ENGINE.os_images(host=host_of(vmrest))
    assert [(i.file, i.kind.value, i.family) for i in images] == [(TEMPLATE, "template", "debian")]


async def test_a_frozen_vmrest_is_unreachable_within_the_timeout(vmrest: StandIn) -> None:
    host = host_of(vmrest, timeout=2, name="vmware-frozen")
    os.kill(vmrest.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(errors.HostUnreachable, match="did not answer in time"):
            await ENGINE.host_status(host=host)
        assert time.monotonic() - started < 5
    finally:
        os.kill(vmrest.pid, signal.SIGCONT)
        await ENGINE.host_close(host=host)
    assert (await ENGINE.host_status(host=host)).online


async def test_create_refuses_unknown_templates_and_taken_names(vmrest: StandIn, vm: str) -> None:
    host = host_of(vmrest)
    before = vmrest.call("GET", "/api/vms").json()
    with pytest.raises(errors.BadRequest, match="not a template VM"):
        await ENGINE.vm_create(host=host, spec=VMSpec("vmware-t-x", "template-nothing", 1, 256, 1),
                               progress=_progress)
    with pytest.raises(errors.Conflict):
        await ENGINE.vm_create(host=host, spec=VMSpec(vm, TEMPLATE, 1, 256, 1), progress=_progress)
    assert vmrest.call("GET", "/api/vms").json() == before


async def test_ref_and_name_reach_the_same_vm(vmrest: StandIn, vm: str) -> None:
    host = host_of(vmrest)
    by_name = await ENGINE.vm_status(host=host, vm_uuid=vm, ref=vm)
    assert by_name.ref == vmrest.vm_id(vm) and by_name.status == "running" and by_name.os_name == TEMPLATE
    by_ref = await ENGINE.vm_status(host=host, vm_uuid=vm, ref=by_name.ref)
    assert (by_ref.cpu_num, by_ref.ram_num, by_ref.ip_addresses) == (1, 256, by_name.ip_addresses)
    with pytest.raises(errors.VMNotFound):
        await ENGINE.vm_status(host=host, vm_uuid="vmware-t-nothere", ref="vmware-t-nothere")


async def test_pause_freezes_the_guest_and_resume_thaws_it(vmrest: StandIn, vm: str) -> None:
    host = host_of(vmrest)
    freezer = HostSpec(name="vmware-pause", server_type="VmwareWork", addr=vmrest.url, user=vmrest.user,
                       password=vmrest.password, options={**OPTIONS, "pause_mode": "pause"})
    port = free_port()
    await ENGINE.nat_add(host=host, vm_uuid=vm, ref=vm, rule=NatRule(port, GUEST_HTTP_PORT))
    await asyncio.to_thread(fetch_through, port, GUEST_BODY)
    paused = await ENGINE.vm_power(host=freezer, vm_uuid=vm, ref=vm, action=PowerAction.PAUSE)
    assert (paused.status, paused.power_state) == ("paused", "paused")
    async with httpx.AsyncClient(timeout=1.5) as http:
        with pytest.raises(httpx.TimeoutException):  # the forward accepts, the frozen guest never answers
            await http.get(f"http://127.0.0.1:{port}/")
    resumed = await ENGINE.vm_power(host=freezer, vm_uuid=vm, ref=vm, action=PowerAction.RESUME)
    assert resumed.status == "running"
    await asyncio.to_thread(fetch_through, port, GUEST_BODY)
    # the default pause_mode suspends: the guest is gone until RESUME powers it on again
    suspended = await ENGINE.vm_power(host=host, vm_uuid=vm, ref=vm, action=PowerAction.PAUSE)
    assert (suspended.status, suspended.power_state) == ("paused", "suspended")
    assert await asyncio.to_thread(stops_serving, port, GUEST_BODY)
    assert (await ENGINE.vm_power(host=host, vm_uuid=vm, ref=vm, action=PowerAction.RESUME)).status == "running"
    await asyncio.to_thread(fetch_through, port, GUEST_BODY)
    await ENGINE.vm_power(host=host, vm_uuid=vm, ref=vm, action=PowerAction.HARD_OFF)
    with pytest.raises(errors.VMOperationFailed, match="cannot be paused"):  # vmrest: no suspend of an off VM
        await ENGINE.vm_power(host=host, vm_uuid=vm, ref=vm, action=PowerAction.PAUSE)


async def test_a_vm_deleted_behind_the_engines_back_is_1002_with_vmrests_message(vmrest: StandIn, vm: str) -> None:
    host = host_of(vmrest)
    ref = vmrest.vm_id(vm)
    assert vmrest.call("PUT", f"/api/vms/{ref}/power", raw="off").status_code == 200
    assert vmrest.call("DELETE", f"/api/vms/{ref}").status_code == 204
    with pytest.raises(errors.VMNotFound, match=r"vmrest answered 404: The virtual machine \w+ is not found"):
        await ENGINE.vm_status(host=host, vm_uuid=vm, ref=str(ref))


async def test_update_needs_a_powered_off_vm_and_changes_its_hardware(vmrest: StandIn, vm: str) -> None:
    host = host_of(vmrest)
    with pytest.raises(errors.VMOperationFailed, match="power it off"):
        await ENGINE.vm_update(host=host, spec=VMSpec(vm, TEMPLATE, 2, 512, 1, ref=vm))
    await ENGINE.vm_power(host=host, vm_uuid=vm, ref=vm, action=PowerAction.HARD_OFF)
    info = await ENGINE.vm_update(host=host, spec=VMSpec(vm, TEMPLATE, 2, 512, 1, ref=vm))
    assert (info.cpu_num, info.ram_num) == (2, 512)
    on_host = vmrest.call("GET", f"/api/vms/{vmrest.vm_id(vm)}").json()
    assert (on_host["cpu"]["processors"], on_host["memory"]) == (2, 512)


async def test_nat_conflicts_ownership_and_sync(vmrest: StandIn, vm: str) -> None:
    host = host_of(vmrest)
    # a port a foreign program holds: vmrest cannot forward it -> 4002
    with socket.create_server(("127.0.0.1", 0)) as held:
        taken = held.getsockname()[1]
        with pytest.raises(errors.Conflict, match="taken"):
            await ENGINE.nat_add(host=host, vm_uuid=vm, ref=vm, rule=NatRule(taken, GUEST_HTTP_PORT))
    # a forward of the host that OpenIDCS did not make: a conflict, and left alone by remove and sync
    foreign = free_port()
    assert vmrest.call("PUT", f"/api/vmnet/vmnet8/portforward/tcp/{foreign}",
                       {"guestIp": "127.0.0.9", "guestPort": 22, "desc": "the admin's ssh"}).status_code == 204
    try:
        with pytest.raises(errors.Conflict, match="already forwarded"):
            await ENGINE.nat_add(host=host, vm_uuid=vm, ref=vm, rule=NatRule(foreign, GUEST_HTTP_PORT))
        await ENGINE.nat_remove(host=host, vm_uuid=vm, rule=NatRule(foreign, GUEST_HTTP_PORT))
        port = free_port()
        rule = await ENGINE.nat_add(host=host, vm_uuid=vm, ref=vm, rule=NatRule(port, GUEST_HTTP_PORT))
        assert rule.lan_addr.startswith("127.")
        # removed behind the engine's back: nat_sync puts it back, for real
        assert vmrest.call("DELETE", f"/api/vmnet/vmnet8/portforward/tcp/{port}").status_code == 204
        assert await asyncio.to_thread(stops_serving, port, GUEST_BODY)
        await ENGINE.nat_sync(host=host, vm_uuid=vm, ref=vm, rules=[NatRule(port, GUEST_HTTP_PORT)])
        await asyncio.to_thread(fetch_through, port, GUEST_BODY)
        await ENGINE.nat_sync(host=host, vm_uuid=vm, ref=vm, rules=[])  # now none of the VM's is wanted
        rows = vmrest.call("GET", "/api/vmnet/vmnet8/portforward").json()["port_forwardings"]
        assert [(r["port"], r["desc"]) for r in rows] == [(foreign, "the admin's ssh")]
    finally:
        vmrest.call("DELETE", f"/api/vmnet/vmnet8/portforward/tcp/{foreign}")


async def test_console_is_a_real_vnc_server_behind_a_password(vmrest: StandIn, vm: str) -> None:
    host = host_of(vmrest)
    endpoint = await ENGINE.vm_console(host=host, vm_uuid=vm, ref=vm)
    assert (endpoint.kind.value, endpoint.address) == ("vnc", "127.0.0.1") and endpoint.password
    assert 47200 <= endpoint.port <= 47299
    deadline = time.monotonic() + 15
    while True:  # Xvnc starts with the VM
        try:
            _reader, writer = await connect_vnc(endpoint)
            break
        except errors.VMOperationFailed:
            assert time.monotonic() < deadline, "the VM's VNC server never answered"
            await asyncio.sleep(0.1)
    writer.close()
    with pytest.raises(errors.VMOperationFailed, match="refused the login"):
        await connect_vnc(type(endpoint)(endpoint.kind, endpoint.address, endpoint.port, password="wrong-pw"))
    await ENGINE.vm_power(host=host, vm_uuid=vm, ref=vm, action=PowerAction.HARD_OFF)
    with pytest.raises(errors.VMOperationFailed, match="while it runs"):
        await ENGINE.vm_console(host=host, vm_uuid=vm, ref=vm)


async def test_delete_powers_off_drops_forwards_and_is_idempotent(vmrest: StandIn) -> None:
    host = host_of(vmrest)
    name = f"vmware-t-{os.urandom(3).hex()}"
    await ENGINE.vm_create(host=host, spec=VMSpec(name, TEMPLATE, 1, 256, 1), progress=_progress)
    await ENGINE.vm_power(host=host, vm_uuid=name, ref=name, action=PowerAction.START)
    port = free_port()
    await ENGINE.nat_add(host=host, vm_uuid=name, ref=name, rule=NatRule(port, GUEST_HTTP_PORT))
    await ENGINE.vm_delete(host=host, vm_uuid=name, ref=name)
    assert vmrest.vm_id(name) is None
    rows = vmrest.call("GET", "/api/vmnet/vmnet8/portforward").json()["port_forwardings"]
    assert port not in [r["port"] for r in rows]
    await ENGINE.vm_delete(host=host, vm_uuid=name, ref=name)  # already gone: fine


async def test_vm_list_skips_templates_and_closes_cleanly(vmrest: StandIn, vm: str) -> None:
    host = host_of(vmrest)
    listed = {i.vm_uuid: i for i in await ENGINE.vm_list(host=host)}
    assert TEMPLATE not in listed and listed[vm].status == "running" and listed[vm].ref == vmrest.vm_id(vm)
    await ENGINE.host_close(host=host)
    assert client.POOLS.take(host) == [], "host_close left a pool open"


async def test_reinstall_is_a_fresh_clone_that_keeps_forwards_and_power(vmrest: StandIn, vm: str) -> None:
    host = host_of(vmrest)
    before = await ENGINE.vm_status(host=host, vm_uuid=vm, ref=vm)
    port = free_port()
    await ENGINE.nat_add(host=host, vm_uuid=vm, ref=before.ref, rule=NatRule(port, GUEST_HTTP_PORT))
    await asyncio.to_thread(fetch_through, port, GUEST_BODY)
    def mac() -> str:
        return vmrest.call("GET", f"/api/vms/{vmrest.vm_id(vm)}/nic").json()["nics"][0]["macAddress"]

    old_mac = mac()
    after = await ENGINE.vm_reinstall(host=host, spec=VMSpec(vm, TEMPLATE, 1, 256, 1, ref=before.ref),
                                      progress=_progress)
    assert after.status == "running" and after.ip_addresses and after.ip_addresses != before.ip_addresses
    assert mac() != old_mac  # a new clone (a new NIC), not the old VM
    await asyncio.to_thread(fetch_through, port, GUEST_BODY)  # the forward follows the new address
    await ENGINE.nat_remove(host=host, vm_uuid=vm, rule=NatRule(port, GUEST_HTTP_PORT))


async def test_concurrent_creates_and_forwards_do_not_collide(vmrest: StandIn, vm: str) -> None:
    host = host_of(vmrest)
    names = [f"vmware-t-{os.urandom(3).hex()}" for _ in range(3)]
    try:
        await asyncio.gather(*(ENGINE.vm_create(host=host, spec=VMSpec(n, TEMPLATE, 1, 256, 1), progress=_progress)
                               for n in names))
        ports = [vmrest.call("GET", f"/api/vms/{vmrest.vm_id(n)}/params/RemoteDisplay.vnc.port").json()["value"]
                 for n in [vm, *names]]
        assert len(set(ports)) == 4, ports  # every VM its own VNC port
        port = free_port()
        outcomes = await asyncio.gather(
            *(ENGINE.nat_add(host=host, vm_uuid=n, ref=n, rule=NatRule(port, GUEST_HTTP_PORT)) for n in (vm, names[0])),
            return_exceptions=True)
        assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "NatRule"], outcomes
        winner = vm if isinstance(outcomes[0], NatRule) else names[0]
        rows = vmrest.call("GET", "/api/vmnet/vmnet8/portforward").json()["port_forwardings"]
        assert [r["desc"] for r in rows if r["port"] == port] == [f"idcs:{winner}"]
        await ENGINE.nat_remove(host=host, vm_uuid=winner, rule=NatRule(port, GUEST_HTTP_PORT))
    finally:
        await asyncio.gather(*(ENGINE.vm_delete(host=host, vm_uuid=n, ref=n) for n in names))


async def test_a_vm_without_vnc_gets_it_for_its_next_power_on(vmrest: StandIn) -> None:
    host = host_of(vmrest)
    name = f"vmware-t-{os.urandom(3).hex()}"
    made = vmrest.call("POST", "/api/vms", {"name": name, "parentId": vmrest.vm_id(TEMPLATE)})  # behind our back
    assert made.status_code == 201
    try:
        await ENGINE.vm_power(host=host, vm_uuid=name, ref=name, action=PowerAction.START)
        with pytest.raises(errors.VMOperationFailed, match="enabled now"):
            await ENGINE.vm_console(host=host, vm_uuid=name, ref=name)
        await ENGINE.vm_power(host=host, vm_uuid=name, ref=name, action=PowerAction.HARD_OFF)
        await ENGINE.vm_power(host=host, vm_uuid=name, ref=name, action=PowerAction.START)
        endpoint = await ENGINE.vm_console(host=host, vm_uuid=name, ref=name)
        deadline = time.monotonic() + 15
        while True:
            try:
                _reader, writer = await connect_vnc(endpoint)
                break
            except errors.VMOperationFailed:
                assert time.monotonic() < deadline, "VNC did not come up after the power-on"
                await asyncio.sleep(0.1)
        writer.close()
    finally:
        await ENGINE.vm_delete(host=host, vm_uuid=name, ref=name)
