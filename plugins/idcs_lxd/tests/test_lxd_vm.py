"""VM lifecycle hooks against the real daemons: create, update, power, list, reinstall, delete."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from idcs_lxd import testing
from idcs_lxd.client import run_async
from idcs_lxd.engine import LXDEngine
from idcs_lxd.testing import unique_name as new_name

from idcs_core import errors
from idcs_core.testing.backends import free_port, http_get
from idcs_core.types import HostSpec, NatRule, PowerAction, VMInfo, VMSpec


def _noop(percent: int, message: str = "") -> None:
    return None


def test_create_start_status_delete(engine: LXDEngine, host: HostSpec, spec: VMSpec) -> None:
    steps: list[int] = []
    spec.vm_name = "web server"
    created = engine.vm_create(host=host, spec=spec, progress=lambda p, m="": steps.append(p))
    try:
        assert steps and steps[-1] == 100 and steps == sorted(steps)
        assert created.vm_uuid == spec.vm_uuid and created.status == "running"
        assert (created.cpu_num, created.ram_num, created.hdd_num) == (1, 128, 2)
        assert created.os_name == spec.os_name and created.vm_name == "web server"
        assert created.extra["storage_driver"] == "dir" and created.extra["disk_limit_enforced"] is False
        status = engine.vm_status(host=host, vm_uuid=spec.vm_uuid)
        assert status.status == "running" and status.power_state == "Running"
        assert status.cpu_usage is not None and 0 <= status.cpu_usage <= 100
        assert status.memory_usage is not None and 0 < status.memory_usage < 100
        inst = engine.clients.get(host).api.instances[spec.vm_uuid].get().json()["metadata"]
        assert inst["config"]["limits.cpu"] == "1" and inst["config"]["limits.memory"] == "128MiB"
        assert inst["devices"]["root"]["size"] == "2GiB"
    finally:
        engine.vm_delete(host=host, vm_uuid=spec.vm_uuid, progress=_noop)
    with pytest.raises(errors.VMNotFound):
        engine.vm_status(host=host, vm_uuid=spec.vm_uuid)
    engine.vm_delete(host=host, vm_uuid=spec.vm_uuid, progress=_noop)  # idempotent


def test_create_unknown_image_is_bad_request(engine: LXDEngine, host: HostSpec, spec: VMSpec) -> None:
    for os_name in ("no-such-image/1", "0123456789abcdef"):
        bad = dataclasses.replace(spec, os_name=os_name)
        with pytest.raises(errors.BadRequest, match="unknown image"):
            engine.vm_create(host=host, spec=bad, progress=_noop)
    assert spec.vm_uuid not in {v.vm_uuid for v in engine.vm_list(host=host)}


def test_create_by_fingerprint(engine: LXDEngine, host: HostSpec, backend: testing.Backend) -> None:
    spec = VMSpec(new_name(), backend.image_fingerprint[:12], 1, 64, 1)
    info = engine.vm_create(host=host, spec=spec, progress=_noop)
    try:
        assert info.status == "running"
    finally:
        engine.vm_delete(host=host, vm_uuid=spec.vm_uuid, progress=_noop)


def test_create_existing_name_is_conflict(engine: LXDEngine, host: HostSpec, vm: VMInfo,
                                          spec: VMSpec) -> None:
    with pytest.raises(errors.Conflict):
        engine.vm_create(host=host, spec=spec, progress=_noop)
    assert engine.vm_status(host=host, vm_uuid=spec.vm_uuid).status == "running"  # untouched


def test_create_failing_half_way_cleans_up(engine: LXDEngine, host: HostSpec, spec: VMSpec) -> None:
    """An instance that is created but cannot start is removed again."""
    client = engine.clients.get(host)
    profile = "idcst-broken"
    try:
        client.api.profiles[profile].delete()
    except Exception:
        pass
    client.api.profiles.post(json={"name": profile, "config": {}, "devices": {
        "root": {"type": "disk", "path": "/", "pool": "default"},
        "missing": {"type": "disk", "source": "/nonexistent/idcs/path", "path": "/mnt/missing"}}})
    broken = HostSpec(host.name, host.server_type, host.addr, host.user, host.password,
                      {**host.options, "profiles": [profile]})
    try:
        with pytest.raises(errors.VMCreateFailed, match="creating"):
            engine.vm_create(host=broken, spec=spec, progress=_noop)
        names = [n.rsplit("/", 1)[-1] for n in client.api.instances.get().json()["metadata"]]
        assert spec.vm_uuid not in names
    finally:
        client.api.profiles[profile].delete()


def test_invalid_name_is_bad_request(engine: LXDEngine, host: HostSpec, spec: VMSpec) -> None:
    with pytest.raises(errors.BadRequest):
        engine.vm_create(host=host, spec=dataclasses.replace(spec, vm_uuid="bad name!"), progress=_noop)


def test_vm_uuid_that_lxd_refuses_is_mapped(engine: LXDEngine, host: HostSpec, spec: VMSpec) -> None:
    """vm_uuids LXD does not take as instance names still work, by a name kept on the instance."""
    vm_uuid = f"{new_name()}_web.1"
    info = engine.vm_create(host=host, spec=dataclasses.replace(spec, vm_uuid=vm_uuid), progress=_noop)
    try:
        assert info.vm_uuid == vm_uuid and info.extra["instance"] != vm_uuid
        assert engine.vm_status(host=host, vm_uuid=vm_uuid).vm_uuid == vm_uuid
        assert vm_uuid in {v.vm_uuid for v in engine.vm_list(host=host)}
        assert engine.vm_power(host=host, vm_uuid=vm_uuid, action=PowerAction.PAUSE).status == "paused"
        with pytest.raises(errors.Conflict):
            engine.vm_create(host=host, spec=dataclasses.replace(spec, vm_uuid=vm_uuid), progress=_noop)
    finally:
        engine.vm_delete(host=host, vm_uuid=vm_uuid, progress=_noop)
    with pytest.raises(errors.VMNotFound):
        engine.vm_status(host=host, vm_uuid=vm_uuid)


def _memory_limit(pid: int) -> int:
    """The memory limit the kernel enforces on the container (read from the host's cgroup)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "memory":
            return int(Path(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes").read_text())
        if controllers == "" and Path(f"/sys/fs/cgroup{path}/memory.max").exists():
            return int(Path(f"/sys/fs/cgroup{path}/memory.max").read_text())
    raise AssertionError("no memory cgroup found")


def test_update_limits_live(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec) -> None:
    pid = engine.vm_status(host=host, vm_uuid=spec.vm_uuid).extra["pid"]
    assert _memory_limit(pid) == 128 * 1024 * 1024
    bigger = dataclasses.replace(spec, cpu_num=2, ram_num=256, hdd_num=3)
    info = engine.vm_update(host=host, spec=bigger, progress=_noop)
    assert info.status == "running" and info.extra["pid"] == pid  # applied live, no restart
    assert (info.cpu_num, info.ram_num, info.hdd_num) == (2, 256, 3)
    assert _memory_limit(pid) == 256 * 1024 * 1024
    with pytest.raises(errors.BadRequest, match="shrink"):
        engine.vm_update(host=host, spec=dataclasses.replace(bigger, hdd_num=1), progress=_noop)


def test_update_missing_vm(engine: LXDEngine, host: HostSpec, spec: VMSpec) -> None:
    with pytest.raises(errors.VMNotFound):
        engine.vm_update(host=host, spec=spec, progress=_noop)


def test_power_actions(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec,
                       sh: Callable[[str, str], str]) -> None:
    name = spec.vm_uuid

    def power(action: PowerAction) -> VMInfo:
        info = engine.vm_power(host=host, vm_uuid=name, action=action)
        assert engine.vm_status(host=host, vm_uuid=name).status == info.status
        return info

    assert power(PowerAction.PAUSE).status == "paused"
    assert power(PowerAction.PAUSE).power_state == "Frozen"  # pausing a paused VM is fine
    assert power(PowerAction.RESUME).status == "running"
    assert power(PowerAction.RESUME).status == "running"
    pid_before = engine.vm_status(host=host, vm_uuid=name).extra["pid"]
    assert power(PowerAction.RESET).status == "running"
    assert engine.vm_status(host=host, vm_uuid=name).extra["pid"] != pid_before
    assert power(PowerAction.STOP).status == "stopped"
    assert power(PowerAction.STOP).status == "stopped"  # stopping a stopped VM is fine
    with pytest.raises(errors.VMOperationFailed):
        power(PowerAction.PAUSE)  # a stopped container cannot be frozen
    assert power(PowerAction.RESUME).status == "running"  # nothing to resume: it runs afterwards
    assert power(PowerAction.HARD_OFF).status == "stopped"
    assert power(PowerAction.START).status == "running"
    assert power(PowerAction.START).status == "running"
    assert power(PowerAction.PAUSE).status == "paused"
    assert power(PowerAction.HARD_OFF).status == "stopped"  # even from frozen
    assert power(PowerAction.RESET).status == "running"  # reset of a stopped VM starts it
    assert "idcs-busybox" in sh(name, "cat /var/www/index.html")


def test_power_missing_vm(engine: LXDEngine, host: HostSpec) -> None:
    with pytest.raises(errors.VMNotFound):
        engine.vm_power(host=host, vm_uuid=new_name(), action=PowerAction.START)


def test_vm_list_in_one_call(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec) -> None:
    engine.vm_power(host=host, vm_uuid=spec.vm_uuid, action=PowerAction.PAUSE)
    client = engine.clients.get(host)
    calls: list[str] = []
    original = client.api.session.request

    def counting(method: str, url: str, *args: object, **kwargs: object) -> object:
        calls.append(f"{method} {url}")
        return original(method, url, *args, **kwargs)

    client.api.session.request = counting  # type: ignore[method-assign]
    try:
        listed = {v.vm_uuid: v for v in engine.vm_list(host=host)}
    finally:
        client.api.session.request = original  # type: ignore[method-assign]
    mine = listed[spec.vm_uuid]
    assert mine.status == "paused" and mine.power_state == "Frozen"
    assert (mine.cpu_num, mine.ram_num, mine.hdd_num, mine.os_name) == (1, 128, 2, spec.os_name)
    assert len([c for c in calls if "/instances" in c]) == 1, calls


def test_os_images(engine: LXDEngine, host: HostSpec, backend: testing.Backend) -> None:
    found = engine.os_images(host=host)
    mine = [i for i in found if i.file == backend.image_alias]
    assert len(mine) == 1
    assert mine[0].family == "busybox" and "BusyBox" in mine[0].name


def test_reinstall_keeps_identity_and_loses_data(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec,
                                                 sh: Callable[[str, str], str]) -> None:
    name = spec.vm_uuid
    sh(name, "echo old-system > /root/marker")
    port = free_port()
    engine.nat_add(host=host, vm_uuid=name, rule=NatRule(port, 80))
    engine.vm_update(host=host, spec=dataclasses.replace(spec, cpu_num=2), progress=_noop)
    with pytest.raises(errors.BadRequest):
        engine.vm_reinstall(host=host, spec=dataclasses.replace(spec, os_name="nope/1"), progress=_noop)
    assert "old-system" in sh(name, "cat /root/marker")  # a failed reinstall changes nothing
    info = engine.vm_reinstall(host=host, spec=dataclasses.replace(spec, cpu_num=2,
                                                                   config={"os_pass": "fresh-1"}),
                               progress=_noop)
    assert info.vm_uuid == name and info.status == "running" and info.cpu_num == 2
    assert info.extra.get("os_pass_applied") is True
    assert sh(name, "cat /root/marker 2>/dev/null || echo gone").strip() == "gone"
    assert [r.host_port for r in _nat_rules(engine, host, name)] == [port]
    assert "idcs-busybox" in http_get(port)


def _nat_rules(engine: LXDEngine, host: HostSpec, name: str) -> list[object]:
    from idcs_lxd import network

    return network.nat_list(engine.clients.get(host), name)


def test_helper_instances_are_not_vms(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec,
                                      backend: testing.Backend) -> None:
    """Instances the engine makes for itself (a reinstall's new system, a restore's import, a holder
    of old backups) are never listed, counted or scanned as VMs, even when one is left behind."""
    from idcs_lxd import instances as lxd_instances
    from idcs_lxd import naming

    client = engine.clients.get(host)
    name = naming.instance_name(spec.vm_uuid)
    helpers = [naming.temp_name(name, "new"), naming.temp_name(name, "rst"), naming.holder_name(name)]
    for helper in helpers:  # what a crash half-way through would leave: a copy claiming to be the VM
        lxd_instances.create(client, {"name": helper, "source": {"type": "image", "alias": backend.image_alias},
                                      "config": {naming.KEY_VM_UUID: spec.vm_uuid}})
    try:
        run_async(client, client.api.instances[helpers[-1]].snapshots.post(json={"name": "old-backup"}))
        listed = [v.vm_uuid for v in engine.vm_list(host=host)]
        assert listed.count(spec.vm_uuid) == 1 and not set(helpers) & set(listed)
        assert engine.host_status(host=host).vms_count == len(listed)
        # a vm_uuid that looks like a helper's name is mapped to another instance name
        assert naming.instance_name(helpers[0]) != helpers[0]
    finally:
        for helper in helpers:
            lxd_instances.delete(client, helper)
