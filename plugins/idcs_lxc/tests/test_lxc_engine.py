"""The engine's own behaviour on real LXC (locally; the kit covers both modes): the busybox
template, freeze, NAT rules the engine owns (reconciled after being removed behind its back,
refused on a port a foreign program holds), and bad input."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from idcs_lxc.engine import LXCEngine
from idcs_lxc.testing import HTTP_BODY, IMAGE, PREFIX, Backend

from idcs_core import errors
from idcs_core.testing.backends import free_port
from idcs_core.types import HostSpec, NatRule, PowerAction, VMSpec


def progress(percent: int, message: str = "") -> None:
    assert 0 <= percent <= 100


@pytest.fixture(scope="module")
def engine() -> LXCEngine:
    return LXCEngine()


@pytest.fixture(scope="module")
def host(backend: Backend) -> HostSpec:
    return backend.host("local", name="lxct-own")


@pytest.fixture(scope="module")
def web(engine: LXCEngine, host: HostSpec) -> Iterator[str]:
    vm = f"{PREFIX}web"
    engine.vm_create(host=host, spec=VMSpec(vm, IMAGE, 1, 128, 1), progress=progress)
    yield vm
    engine.vm_delete(host=host, vm_uuid=vm, ref=vm, progress=progress)


def _get(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/", timeout=3).text


def test_busybox_template_without_chpasswd_gives_a_clear_error(engine: LXCEngine, host: HostSpec,
                                                               backend: Backend) -> None:
    vm = f"{PREFIX}bb"
    info = engine.vm_create(host=host, spec=VMSpec(vm, "busybox", 1, 64, 1), progress=progress)
    try:
        assert (info.status, info.os_name, info.cpu_num, info.ram_num) == ("running", "busybox", 1, 64)
        limit = subprocess.run(["lxc-cgroup", "-P", backend.lxcpath, "-n", vm, "memory.limit_in_bytes"],
                               capture_output=True, text=True).stdout.strip()
        assert limit == str(64 * 1024 * 1024)
        with pytest.raises(errors.VMOperationFailed, match="has no chpasswd"):
            engine.vm_set_password(host=host, vm_uuid=vm, ref=vm, username="root", password="Secret-1")
    finally:
        engine.vm_delete(host=host, vm_uuid=vm, ref=vm, progress=progress)
    assert vm not in [v.vm_uuid for v in engine.vm_list(host=host)]


def test_unknown_image_and_taken_name_change_nothing(engine: LXCEngine, host: HostSpec, web: str) -> None:
    before = [v.vm_uuid for v in engine.vm_list(host=host)]
    with pytest.raises(errors.BadRequest, match="unknown image"):
        engine.vm_create(host=host, spec=VMSpec(f"{PREFIX}x", "nope.tar.gz", 1, 64, 1), progress=progress)
    with pytest.raises(errors.Conflict):
        engine.vm_create(host=host, spec=VMSpec(web, IMAGE, 1, 64, 1), progress=progress)
    assert [v.vm_uuid for v in engine.vm_list(host=host)] == before


def test_freeze_stops_serving_and_unfreeze_serves_again(engine: LXCEngine, host: HostSpec, web: str) -> None:
    port = free_port()
    engine.nat_add(host=host, vm_uuid=web, ref=web, rule=NatRule(port, 80), progress=progress)
    try:
        assert HTTP_BODY in _get(port)
        assert engine.vm_power(host=host, vm_uuid=web, ref=web, action=PowerAction.PAUSE).status == "paused"
        with pytest.raises(httpx.TimeoutException):
            _get(port)
        assert engine.vm_power(host=host, vm_uuid=web, ref=web, action=PowerAction.RESUME).status == "running"
        assert HTTP_BODY in _get(port)
    finally:
        engine.nat_remove(host=host, vm_uuid=web, ref=web, rule=NatRule(port, 80), progress=progress)


def test_nat_rules_reconciled_after_removal_behind_the_engines_back(engine: LXCEngine, host: HostSpec,
                                                                   backend: Backend, web: str) -> None:
    port = free_port()
    rule = engine.nat_add(host=host, vm_uuid=web, ref=web, rule=NatRule(port, 80), progress=progress)
    assert HTTP_BODY in _get(port)
    subprocess.run(["nft", "delete", "table", "ip", backend.table], check=True)  # as after a host reboot
    with pytest.raises(httpx.HTTPError):
        _get(port)
    engine.nat_sync(host=host, vm_uuid=web, ref=web, rules=[rule])
    assert HTTP_BODY in _get(port)
    listed = subprocess.run(["nft", "list", "table", "ip", backend.table], capture_output=True, text=True).stdout
    assert listed.count(f"idcs:{web}:tcp:{port}:80") == 2  # prerouting + output, nothing doubled
    engine.nat_sync(host=host, vm_uuid=web, ref=web, rules=[])
    assert f"idcs:{web}:" not in subprocess.run(["nft", "list", "table", "ip", backend.table],
                                                capture_output=True, text=True).stdout


def test_port_held_by_a_foreign_program_is_a_conflict(engine: LXCEngine, host: HostSpec, web: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(errors.Conflict, match="held by a program") as caught:
            engine.nat_add(host=host, vm_uuid=web, ref=web, rule=NatRule(port, 80), progress=progress)
        assert f"pid {os.getpid()} (" in caught.value.msg  # a local host names the program to stop


def test_missing_container_answers_1002(engine: LXCEngine, host: HostSpec) -> None:
    with pytest.raises(errors.VMNotFound):
        engine.vm_status(host=host, vm_uuid=f"{PREFIX}absent", ref=f"{PREFIX}absent")
    with pytest.raises(errors.VMNotFound):
        engine.vm_power(host=host, vm_uuid=f"{PREFIX}absent", ref=f"{PREFIX}absent", action=PowerAction.START)
    engine.vm_delete(host=host, vm_uuid=f"{PREFIX}absent", ref=f"{PREFIX}absent", progress=progress)  # idempotent
