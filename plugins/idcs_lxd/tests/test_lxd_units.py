"""Pure functions and packaging: no daemon needed."""

from __future__ import annotations

from importlib import metadata

import pytest
from idcs_lxd import client, images, info, lifecycle, naming, network

from idcs_core import errors
from idcs_core.enginekit import option_bool
from idcs_core.plugins import Engine
from idcs_core.types import NatRule


@pytest.mark.parametrize(("addr", "kind", "target"), [
    ("/var/lib/lxd/unix.socket", "unix", "/var/lib/lxd/unix.socket"),
    ("unix:///var/lib/incus/unix.socket", "unix", "/var/lib/incus/unix.socket"),
    ("https://10.0.0.5:8443", "https", "https://10.0.0.5:8443"),
    ("https://lxd.example", "https", "https://lxd.example:8443"),
    ("10.0.0.5", "https", "https://10.0.0.5:8443"),
    ("lxd.example:9443/", "https", "https://lxd.example:9443"),
    ("https://[fd00::1]:8443", "https", "https://[fd00::1]:8443"),
])
def test_parse_addr(addr: str, kind: str, target: str) -> None:
    endpoint = client.parse_addr(addr)
    assert (endpoint.kind, endpoint.target) == (kind, target)


@pytest.mark.parametrize("addr", ["", "http://10.0.0.5:8443", "ftp://x", "unix://relative/path"])
def test_parse_addr_rejects(addr: str) -> None:
    with pytest.raises(errors.BadRequest):
        client.parse_addr(addr)


@pytest.mark.parametrize(("text", "value"), [
    ("512MiB", 512 * 2**20), ("1GB", 10**9), ("2GiB", 2 * 2**30), ("100", 100), ("1.5GiB", 3 * 2**29),
    ("50%", None), ("", None), (None, None), ("lots", None),
])
def test_parse_bytes(text: str | None, value: int | None) -> None:
    assert info.parse_bytes(text) == value


@pytest.mark.parametrize(("text", "count"), [("2", 2), ("0-3", 4), ("0,2", 2), ("0-1,4", 3), ("", None),
                                             ("x", None)])
def test_parse_cpus(text: str, count: int | None) -> None:
    assert info.parse_cpus(text) == count


def test_status_words() -> None:
    assert info.status_word("Running") == "running"
    assert info.status_word("Frozen") == "paused"
    assert info.status_word("Stopped") == "stopped"
    assert info.status_word("Error") == "stopped"


def test_to_vminfo_reads_limits_and_addresses() -> None:
    inst = {"name": "v1", "status": "Running", "type": "container",
            "expanded_config": {"limits.cpu": "2", "limits.memory": "256MiB", info.KEY_OS_NAME: "debian/12"},
            "expanded_devices": {"root": {"type": "disk", "path": "/", "pool": "p", "size": "10GiB"}}}
    state = {"status": "Running", "memory": {"usage": 64 * 2**20},
             "network": {"lo": {"type": "loopback", "addresses": [{"family": "inet", "address": "127.0.0.1",
                                                                   "scope": "local"}]},
                         "eth0": {"type": "broadcast", "hwaddr": "00:16:3e:00:00:01", "addresses": [
                             {"family": "inet", "address": "10.1.1.2", "scope": "global", "netmask": "24"},
                             {"family": "inet6", "address": "fe80::1", "scope": "link", "netmask": "64"}]}}}
    vm = info.to_vminfo(inst, state)
    assert (vm.cpu_num, vm.ram_num, vm.hdd_num, vm.os_name) == (2, 256, 10, "debian/12")
    assert vm.status == "running" and vm.memory_usage == 25.0
    assert vm.ip_addresses == ["10.1.1.2"]


def test_image_family() -> None:
    assert images.family_of({"os": "Ubuntu"}) == "ubuntu"
    assert images.family_of({"os": "RockyLinux"}) == "rocky"
    assert images.family_of({}, "debian/12") == "debian"
    assert images.family_of({}, "ubuntu-22.04-server.iso") == "ubuntu"
    assert images.family_of({}, "0123abcd") == "other"


def test_nat_device_round_trip() -> None:
    rule = NatRule(host_port=2222, vm_port=22, protocol="tcp")
    assert network.device_name(rule) == "idcs-nat-tcp-2222"
    assert network.rule_of({"listen": "tcp:0.0.0.0:2222", "connect": "tcp:127.0.0.1:22"}) == NatRule(
        2222, 22, "tcp", "127.0.0.1")


@pytest.mark.parametrize("vm_uuid", ["web-1", "a", "x" * 63])
def test_valid_instance_names_are_kept(vm_uuid: str) -> None:
    assert naming.instance_name(vm_uuid) == vm_uuid


@pytest.mark.parametrize("vm_uuid", ["1abc", "a_b", "a-", "x" * 64, "my.vm", "-x", "_", "9"])
def test_other_vm_uuids_are_mapped(vm_uuid: str) -> None:
    name = naming.instance_name(vm_uuid)
    assert naming.is_instance_name(name) and name != vm_uuid
    assert naming.instance_name(vm_uuid) == name  # deterministic
    assert naming.instance_name(name) == name  # a mapped name maps to itself
    assert naming.vm_uuid_of({"name": name, "config": {naming.KEY_VM_UUID: vm_uuid}}) == vm_uuid


def test_mapped_names_differ() -> None:
    assert naming.instance_name("a_b") != naming.instance_name("a.b")


@pytest.mark.parametrize("vm_uuid", ["", "a b", "../x", "a/b", "x" * 65, "é"])
def test_invalid_vm_uuids_rejected(vm_uuid: str) -> None:
    with pytest.raises(errors.BadRequest):
        naming.instance_name(vm_uuid)


def test_cpu_sampler() -> None:
    sampler = lifecycle.CpuSampler()
    assert sampler.percent(("h", "v"), 1_000_000_000, 1) is None
    import time

    time.sleep(0.1)
    value = sampler.percent(("h", "v"), 1_050_000_000, 1)
    assert value is not None and 0 < value <= 100


def test_entry_point_loads_engine() -> None:
    eps = [ep for ep in metadata.entry_points(group="idcs.engines") if ep.name == "LXD"]
    assert len(eps) == 1 and eps[0].value == "idcs_lxd.engine:LXDEngine"
    engine = Engine("LXD", eps[0].load()())  # check_pending: every hook name is a real hook
    assert {"vm_create", "power", "nat", "disk", "backup", "backup_scan", "password", "terminal", "iso",
            "scan", "images", "vm_reinstall", "vm_update", "vm_delete", "ip"} <= set(engine.capabilities)
    assert engine.description["title"] == "LXD / Incus"


@pytest.mark.parametrize(("value", "expected"), [
    (None, False), ("", False), (False, False), (True, True), (0, False), (1, True),
    ("false", False), ("False", False), ("0", False), ("no", False), ("off", False),
    ("true", True), ("YES", True), ("1", True), ("on", True),
])
def test_yes_no_options(value: object, expected: bool) -> None:
    assert option_bool("verify_tls", value) is expected


def test_yes_no_option_rejects_other_words() -> None:
    with pytest.raises(errors.BadRequest):
        option_bool("verify_tls", "maybe")


def test_server_cert_forms(tmp_path: object) -> None:
    fingerprint = "ab" * 32
    assert client.parse_pin(fingerprint) == fingerprint
    assert client.parse_pin("AB:" * 31 + "AB") == fingerprint
    assert client.parse_pin(f"sha256:{fingerprint.upper()}") == fingerprint
    for bad in ("", "ab" * 31, "/no/such/file.pem", "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----"):
        with pytest.raises(errors.BadRequest):
            client.parse_pin(bad)


def test_helper_names_are_reserved() -> None:
    name = naming.instance_name("web-1")
    for helper in (naming.temp_name(name, "new"), naming.temp_name(name, "rst"), naming.temp_name(name, "exp"),
                   naming.holder_name(name)):
        assert naming.is_internal(helper) and naming.instance_name(helper) != helper
    assert naming.holder_name(name) != naming.holder_name(name)
    assert naming.is_holder(naming.holder_name(name)) and not naming.is_holder(naming.temp_name(name, "new"))
    assert not naming.is_internal(name)
