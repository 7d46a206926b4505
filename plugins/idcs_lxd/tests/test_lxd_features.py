"""NAT, backups, disks, passwords, terminal and ISO hooks against the real daemons."""

from __future__ import annotations

import socket
import tarfile
import threading
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path

import pytest
from idcs_lxd import instances, naming, network, replace, storage
from idcs_lxd.client import run_async
from idcs_lxd.engine import LXDEngine
from idcs_lxd.errors import OperationFailed
from idcs_lxd.testing import unique_name

from idcs_core import errors
from idcs_core.testing.backends import free_port, http_get
from idcs_core.types import DiskSpec, HostSpec, NatRule, PowerAction, VMInfo, VMSpec

Shell = Callable[[str, str], str]


def _noop(percent: int, message: str = "") -> None:
    return None


def _nat_devices(engine: LXDEngine, host: HostSpec, name: str) -> dict[str, dict[str, str]]:
    devices = engine.clients.get(host).api.instances[name].get().json()["metadata"]["devices"]
    return {k: v for k, v in devices.items() if k.startswith(network.NAT_PREFIX)}


# ------------------------------------------------------------------ NAT


def test_nat_forward_proven_with_http(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec,
                                      sh: Shell) -> None:
    name = spec.vm_uuid
    sh(name, f"echo served-by-{name} > /var/www/index.html")
    port = free_port()
    applied = engine.nat_add(host=host, vm_uuid=name, rule=NatRule(host_port=port, vm_port=80))
    assert (applied.host_port, applied.vm_port, applied.protocol, applied.lan_addr) == (port, 80, "tcp",
                                                                                        "127.0.0.1")
    assert http_get(port).strip() == f"served-by-{name}"
    assert engine.nat_add(host=host, vm_uuid=name, rule=NatRule(port, 80)).host_port == port  # idempotent
    assert list(_nat_devices(engine, host, name)) == [f"idcs-nat-tcp-{port}"]

    # a raw TCP round trip through the forward, to a listener started in the guest
    raw_port = free_port()
    engine.nat_add(host=host, vm_uuid=name, rule=NatRule(raw_port, 7000))
    # (setsid: LXD ends the exec's session, and a plain background job with it)
    sh(name, "printf '#!/bin/sh\\nread line\\necho pong-$line\\n' > /root/pong; chmod +x /root/pong; "
             "setsid nc -ll -p 7000 -e /root/pong </dev/null >/dev/null 2>&1 &")
    deadline, answer = time.monotonic() + 10, b""
    while time.monotonic() < deadline and b"pong" not in answer:
        try:
            with socket.create_connection(("127.0.0.1", raw_port), timeout=3) as conn:
                conn.sendall(b"ping\n")
                answer = conn.recv(64)
        except OSError:
            time.sleep(0.1)
    assert answer.strip() == b"pong-ping"

    # the forward survives a restart (proxy devices live in the instance config)
    engine.vm_power(host=host, vm_uuid=name, action=PowerAction.RESET)
    assert http_get(port).strip() == f"served-by-{name}"

    engine.nat_remove(host=host, vm_uuid=name, rule=NatRule(port, 80))
    engine.nat_remove(host=host, vm_uuid=name, rule=NatRule(port, 80))  # idempotent
    with pytest.raises(urllib.error.URLError):
        http_get(port, timeout=0)
    assert [r.host_port for r in network.nat_list(engine.clients.get(host), name)] == [raw_port]


def test_nat_port_taken_is_conflict(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec) -> None:
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(errors.Conflict, match="in use"):
            engine.nat_add(host=host, vm_uuid=spec.vm_uuid, rule=NatRule(port, 80))
    assert _nat_devices(engine, host, spec.vm_uuid) == {}


def test_nat_port_of_another_vm_is_conflict(engine: LXDEngine, host: HostSpec, vm: VMInfo,
                                            spec: VMSpec, backend: object) -> None:
    port = free_port()
    engine.nat_add(host=host, vm_uuid=spec.vm_uuid, rule=NatRule(port, 80))
    other = VMSpec(unique_name(), spec.os_name, 1, 64, 1)
    engine.vm_create(host=host, spec=other, progress=_noop)
    try:
        engine.vm_power(host=host, vm_uuid=other.vm_uuid, action=PowerAction.HARD_OFF)
        with pytest.raises(errors.Conflict, match=spec.vm_uuid):
            engine.nat_add(host=host, vm_uuid=other.vm_uuid, rule=NatRule(port, 22))
    finally:
        engine.vm_delete(host=host, vm_uuid=other.vm_uuid, progress=_noop)


def test_nat_bad_rule_is_bad_request(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec) -> None:
    with pytest.raises(errors.BadRequest):
        engine.nat_add(host=host, vm_uuid=spec.vm_uuid, rule=NatRule(free_port(), 80, "sctp"))
    with pytest.raises(errors.BadRequest):
        engine.nat_add(host=host, vm_uuid=spec.vm_uuid, rule=NatRule(70000, 80))


def test_nat_sync_makes_exactly_the_list(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec) -> None:
    name = spec.vm_uuid
    a, b, c = free_port(), free_port(), free_port()
    engine.nat_add(host=host, vm_uuid=name, rule=NatRule(a, 80))
    engine.nat_sync(host=host, vm_uuid=name, rules=[NatRule(b, 80), NatRule(c, 53, "udp")])
    assert sorted(_nat_devices(engine, host, name)) == sorted([f"idcs-nat-tcp-{b}", f"idcs-nat-udp-{c}"])
    assert "idcs-busybox" in http_get(b)
    engine.nat_sync(host=host, vm_uuid=name, rules=[NatRule(b, 80)])
    assert list(_nat_devices(engine, host, name)) == [f"idcs-nat-tcp-{b}"]
    engine.nat_sync(host=host, vm_uuid=name, rules=[])
    assert _nat_devices(engine, host, name) == {}


def test_ip_list_of_container_without_nic(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec) -> None:
    assert engine.vm_ip_list(host=host, vm_uuid=spec.vm_uuid) == []  # only loopback, which is not listed
    with pytest.raises(errors.VMNotFound):
        engine.vm_ip_list(host=host, vm_uuid=unique_name())


# ------------------------------------------------------------------ backups


def test_backup_restore_brings_back_data(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec,
                                         sh: Shell) -> None:
    name = spec.vm_uuid
    port = free_port()
    engine.nat_add(host=host, vm_uuid=name, rule=NatRule(port, 80))
    sh(name, "echo before-backup > /root/data.txt")
    steps: list[int] = []
    made = engine.backup_create(host=host, vm_uuid=name, backup_name="b_1.x", description="first",
                                progress=lambda p, m="": steps.append(p))
    assert steps and steps == sorted(steps) and steps[-1] < 100
    assert (made.backup_name, made.vm_uuid, made.description) == ("b_1.x", name, "first") and made.created_at
    with pytest.raises(errors.Conflict):
        engine.backup_create(host=host, vm_uuid=name, backup_name="b_1.x", description="", progress=_noop)
    snapshots = engine.clients.get(host).api.instances[name].snapshots.get().json()["metadata"]
    assert [s.rsplit("/", 1)[-1] for s in snapshots] == ["b_1.x"]

    # after the backup: the data changes, a forward, a disk and more memory are added
    sh(name, "echo after-backup > /root/data.txt; echo new > /root/new.txt")
    later = free_port()
    engine.nat_add(host=host, vm_uuid=name, rule=NatRule(later, 80))
    engine.disk_attach(host=host, vm_uuid=name, disk=DiskSpec("extra", 1))
    sh(name, "echo on-disk > /mnt/extra/f.txt")
    engine.vm_update(host=host, spec=VMSpec(name, spec.os_name, 2, 192, 2), progress=_noop)

    restored = engine.backup_restore(host=host, vm_uuid=name, backup_name="b_1.x", progress=_noop)
    assert restored.status == "running"
    assert sh(name, "cat /root/data.txt").strip() == "before-backup"
    assert sh(name, "ls /root").split() == ["data.txt"]
    # what the core records separately stays as it is now: limits, forwards, disks
    assert (restored.cpu_num, restored.ram_num) == (2, 192)
    assert sorted(_nat_devices(engine, host, name)) == sorted([f"idcs-nat-tcp-{port}", f"idcs-nat-tcp-{later}"])
    assert "idcs-busybox" in http_get(later)
    assert sh(name, "cat /mnt/extra/f.txt").strip() == "on-disk"

    # a fresh engine and host record (a scan after a reinstall of OpenIDCS) finds the backup
    fresh = HostSpec("another-record", host.server_type, host.addr, host.user, host.password, {})
    listed = [b for b in LXDEngine().backup_list(host=fresh) if b.vm_uuid == name]
    assert [(b.backup_name, b.description, b.created_at) for b in listed] == [("b_1.x", "first",
                                                                               made.created_at)]
    engine.backup_delete(host=host, vm_uuid=name, backup_name="b_1.x")
    engine.backup_delete(host=host, vm_uuid=name, backup_name="b_1.x")  # idempotent
    assert not [b for b in engine.backup_list(host=host) if b.vm_uuid == name]
    with pytest.raises(errors.NotFound):
        engine.backup_restore(host=host, vm_uuid=name, backup_name="b_1.x", progress=_noop)


def test_restore_of_a_paused_vm_and_two_backups(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec,
                                                sh: Shell) -> None:
    name = spec.vm_uuid
    for version in ("v1", "v2"):
        sh(name, f"echo {version} > /root/v.txt")
        engine.backup_create(host=host, vm_uuid=name, backup_name=version, description=version, progress=_noop)
    sh(name, "echo v3 > /root/v.txt")
    engine.vm_power(host=host, vm_uuid=name, action=PowerAction.PAUSE)
    assert engine.backup_restore(host=host, vm_uuid=name, backup_name="v1", progress=_noop).status == "running"
    assert sh(name, "cat /root/v.txt").strip() == "v1"
    # the later backup is still there and still restorable, with its description
    assert {b.backup_name: b.description for b in engine.backup_list(host=host) if b.vm_uuid == name} == {
        "v1": "v1", "v2": "v2"}
    engine.vm_power(host=host, vm_uuid=name, action=PowerAction.HARD_OFF)
    assert engine.backup_restore(host=host, vm_uuid=name, backup_name="v2", progress=_noop).status == "stopped"
    engine.vm_power(host=host, vm_uuid=name, action=PowerAction.START)
    assert sh(name, "cat /root/v.txt").strip() == "v2"


def test_archive_restores_a_deleted_vm(engine: LXDEngine, archive_host: HostSpec, spec: VMSpec,
                                       sh: Shell) -> None:
    host, name = archive_host, spec.vm_uuid
    engine.vm_create(host=host, spec=spec, progress=_noop)
    try:
        sh(name, "echo keep-me > /root/keep.txt")
        made = engine.backup_create(host=host, vm_uuid=name, backup_name="arch-1", description="offsite",
                                    progress=_noop)
        archive = Path(host.options["backup_dir"]) / name / "arch-1.tar.gz"
        assert archive.is_file() and made.size_bytes == archive.stat().st_size > 100_000
        # nothing is left in the daemon's own backup store
        assert engine.clients.get(host).api.instances[name].backups.get().json()["metadata"] == []
        sh(name, "echo changed > /root/keep.txt")
        engine.vm_delete(host=host, vm_uuid=name, progress=_noop)  # the snapshot goes with it
        listed = [b for b in engine.backup_list(host=host) if b.vm_uuid == name]
        assert [(b.backup_name, b.description) for b in listed] == [("arch-1", "offsite")]

        restored = engine.backup_restore(host=host, vm_uuid=name, backup_name="arch-1", progress=_noop)
        assert restored.vm_uuid == name
        engine.vm_power(host=host, vm_uuid=name, action=PowerAction.START)
        assert sh(name, "cat /root/keep.txt").strip() == "keep-me"
    finally:
        engine.vm_delete(host=host, vm_uuid=name, progress=_noop)
        engine.backup_delete(host=host, vm_uuid=name, backup_name="arch-1")
    assert not (Path(host.options["backup_dir"]) / name).exists()


def test_restore_of_a_deleted_vm_without_archive(engine: LXDEngine, host: HostSpec, spec: VMSpec) -> None:
    with pytest.raises(errors.VMNotFound):
        engine.backup_restore(host=host, vm_uuid=spec.vm_uuid, backup_name="b1", progress=_noop)


def test_backup_name_is_checked(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec) -> None:
    for bad in ("../escape", "a/b", ".hidden", ""):
        with pytest.raises(errors.BadRequest):
            engine.backup_create(host=host, vm_uuid=spec.vm_uuid, backup_name=bad, description="",
                                 progress=_noop)


# ------------------------------------------------------------------ disks


def test_disk_attach_detach_delete(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec,
                                   sh: Shell) -> None:
    name = spec.vm_uuid
    client = engine.clients.get(host)
    engine.disk_attach(host=host, vm_uuid=name, disk=DiskSpec(name="data", size_gb=1))
    engine.disk_attach(host=host, vm_uuid=name, disk=DiskSpec(name="data", size_gb=1))  # attached: fine
    sh(name, "echo on-the-disk > /mnt/data/file.txt")
    vol = client.api.storage_pools["default"].volumes.custom[f"idcs-{name}-data"].get().json()["metadata"]
    assert vol["config"]["size"] == "1GiB" and vol["config"][storage.KEY_VM] == name

    engine.disk_detach(host=host, vm_uuid=name, disk_name="data")
    engine.disk_detach(host=host, vm_uuid=name, disk_name="data")  # detached: fine
    assert sh(name, "cat /mnt/data/file.txt 2>/dev/null || echo not-mounted").strip() == "not-mounted"

    engine.disk_attach(host=host, vm_uuid=name, disk=DiskSpec(name="data", size_gb=1))
    assert sh(name, "cat /mnt/data/file.txt").strip() == "on-the-disk"  # the data was kept

    engine.disk_delete(host=host, vm_uuid=name, disk_name="data")
    engine.disk_delete(host=host, vm_uuid=name, disk_name="data")  # gone: fine
    assert storage.volumes_of(client, name) == []
    assert "idcs-disk-data" not in client.api.instances[name].get().json()["metadata"]["devices"]

    with pytest.raises(errors.BadRequest):
        engine.disk_attach(host=host, vm_uuid=name, disk=DiskSpec(name="../etc", size_gb=1))


def test_delete_vm_removes_its_disks(engine: LXDEngine, host: HostSpec, spec: VMSpec) -> None:
    engine.vm_create(host=host, spec=spec, progress=_noop)
    engine.disk_attach(host=host, vm_uuid=spec.vm_uuid, disk=DiskSpec(name="d1", size_gb=1))
    engine.disk_attach(host=host, vm_uuid=spec.vm_uuid, disk=DiskSpec(name="d2", size_gb=1))
    engine.disk_detach(host=host, vm_uuid=spec.vm_uuid, disk_name="d2")
    assert len(storage.volumes_of(engine.clients.get(host), spec.vm_uuid)) == 2
    engine.vm_delete(host=host, vm_uuid=spec.vm_uuid, progress=_noop)
    assert storage.volumes_of(engine.clients.get(host), spec.vm_uuid) == []


def test_iso_on_a_container_is_not_supported(engine: LXDEngine, host: HostSpec, vm: VMInfo,
                                             spec: VMSpec) -> None:
    with pytest.raises(errors.NotSupported, match="container"):
        engine.iso_mount(host=host, vm_uuid=spec.vm_uuid, iso_name="debian-12.iso")
    with pytest.raises(errors.NotSupported):
        engine.iso_unmount(host=host, vm_uuid=spec.vm_uuid, iso_name="debian-12.iso")


# ------------------------------------------------------------------ password and terminal


def _shadow_hash(sh: Shell, name: str, user: str = "root") -> str:
    return sh(name, f"grep '^{user}:' /etc/shadow").split(":")[1]


def test_set_password(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec, sh: Shell) -> None:
    name = spec.vm_uuid
    assert _shadow_hash(sh, name) == "*"
    engine.vm_set_password(host=host, vm_uuid=name, username="root", password="S3cret pass:word")
    stored = _shadow_hash(sh, name)
    assert stored.startswith("$6$")
    salt = stored.split("$")[2]
    # the guest's own crypt gives the same hash for the same password and salt
    assert sh(name, f"printf '%s' 'S3cret pass:word' | mkpasswd -m sha512 -S '{salt}' -P 0").strip() == stored


def test_set_password_without_chpasswd(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec,
                                       sh: Shell) -> None:
    sh(spec.vm_uuid, "rm /usr/sbin/chpasswd")
    with pytest.raises(errors.VMOperationFailed, match="no chpasswd"):
        engine.vm_set_password(host=host, vm_uuid=spec.vm_uuid, username="root", password="x-1")
    engine.vm_power(host=host, vm_uuid=spec.vm_uuid, action=PowerAction.HARD_OFF)
    with pytest.raises(errors.VMOperationFailed, match="not running"):
        engine.vm_set_password(host=host, vm_uuid=spec.vm_uuid, username="root", password="x-1")
    with pytest.raises(errors.BadRequest):
        engine.vm_set_password(host=host, vm_uuid=spec.vm_uuid, username="root:0", password="x")


class _Reader:
    """Reads a terminal in a thread so a test can wait for output with a deadline."""

    def __init__(self, term: object) -> None:
        self.term, self.buffer, self.eof = term, b"", threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            chunk = self.term.read()  # type: ignore[attr-defined]
            if not chunk:
                self.eof.set()
                return
            self.buffer += chunk

    def wait_for(self, needle: bytes, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.buffer:
            assert time.monotonic() < deadline, f"{needle!r} not in {self.buffer[-400:]!r}"
            time.sleep(0.02)
        return self.buffer


def test_terminal_round_trip(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec) -> None:
    term = engine.vm_terminal_open(host=host, vm_uuid=spec.vm_uuid, cols=80, rows=24)
    reader = _Reader(term)
    try:
        term.write(b"echo idcs-kit-'o''k'\r")  # Enter as a browser terminal sends it
        reader.wait_for(b"idcs-kit-ok")
        term.write(b"echo sum=$((20+22)); stty size\n")
        reader.wait_for(b"sum=42")
        reader.wait_for(b"24 80")
        term.resize(132, 40)
        term.write(b"stty size\n")
        reader.wait_for(b"40 132")
        term.write(b"exit\n")
        assert reader.eof.wait(10), "read() must return b'' once the shell exits"
        with pytest.raises(errors.VMOperationFailed):
            term.write(b"echo too late\n")
    finally:
        term.close()
        term.close()  # idempotent


def test_terminal_close_ends_the_shell(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec,
                                       sh: Shell) -> None:
    term = engine.vm_terminal_open(host=host, vm_uuid=spec.vm_uuid, cols=80, rows=24)
    reader = _Reader(term)
    term.write(b"exec sleep 1234\n")
    time.sleep(0.3)
    assert "1234" in sh(spec.vm_uuid, "ps")
    started = time.monotonic()
    term.close()
    assert reader.eof.wait(5)
    assert time.monotonic() - started < 3
    deadline = time.monotonic() + 5
    while "sleep 1234" in sh(spec.vm_uuid, "ps") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "sleep 1234" not in sh(spec.vm_uuid, "ps")


def test_terminal_needs_a_running_vm(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec) -> None:
    engine.vm_power(host=host, vm_uuid=spec.vm_uuid, action=PowerAction.HARD_OFF)
    with pytest.raises(errors.VMOperationFailed, match="not running"):
        engine.vm_terminal_open(host=host, vm_uuid=spec.vm_uuid, cols=80, rows=24)


# ------------------------------------------------------------------ backups across reinstalls and restores


def _helpers_of(engine: LXDEngine, host: HostSpec, vm_uuid: str) -> list[str]:
    """The engine's hidden instances (holders, temporaries) of this VM."""
    client = engine.clients.get(host)
    name = naming.instance_name(vm_uuid)
    return [n for n in replace.names(client)
            if n.startswith(naming.holder_prefix(name)) or n in {naming.temp_name(name, p) for p in naming.PURPOSES}]


def test_reinstall_keeps_backups_restorable(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec,
                                            sh: Shell) -> None:
    name = spec.vm_uuid
    port = free_port()
    engine.nat_add(host=host, vm_uuid=name, rule=NatRule(port, 80))
    engine.disk_attach(host=host, vm_uuid=name, disk=DiskSpec("keep", 1))
    sh(name, "echo on-disk > /mnt/keep/f.txt; echo v1 > /root/v.txt")
    engine.backup_create(host=host, vm_uuid=name, backup_name="before", description="pre-reinstall",
                         progress=_noop)
    info = engine.vm_reinstall(host=host, spec=spec, progress=_noop)
    assert info.status == "running" and info.extra["backups_kept"] is True
    assert sh(name, "cat /root/v.txt 2>/dev/null || echo gone").strip() == "gone"
    listed = {b.backup_name: b.description for b in engine.backup_list(host=host) if b.vm_uuid == name}
    assert listed == {"before": "pre-reinstall"}
    # the instance keeping the old snapshots is no VM: not listed, not counted
    assert [v.vm_uuid for v in engine.vm_list(host=host)].count(name) == 1
    assert engine.host_status(host=host).vms_count == len(engine.vm_list(host=host))
    assert len(_helpers_of(engine, host, name)) == 1

    sh(name, "echo v2 > /root/v.txt")
    engine.backup_create(host=host, vm_uuid=name, backup_name="after", description="post-reinstall",
                         progress=_noop)
    sh(name, "echo v3 > /root/v.txt")
    restored = engine.backup_restore(host=host, vm_uuid=name, backup_name="before", progress=_noop)
    assert restored.status == "running" and sh(name, "cat /root/v.txt").strip() == "v1"
    assert "idcs-busybox" in http_get(port)  # the VM's forward and disk are the VM's, not the backup's
    assert sh(name, "cat /mnt/keep/f.txt").strip() == "on-disk"
    # the backup made after the reinstall survived this restore, which replaced the instance again
    assert engine.backup_restore(host=host, vm_uuid=name, backup_name="after", progress=_noop).status == "running"
    assert sh(name, "cat /root/v.txt").strip() == "v2"
    fresh = HostSpec("another-record", host.server_type, host.addr, host.user, host.password, {})
    assert {b.backup_name: b.description for b in LXDEngine().backup_list(host=fresh) if b.vm_uuid == name} == {
        "before": "pre-reinstall", "after": "post-reinstall"}

    engine.backup_delete(host=host, vm_uuid=name, backup_name="before")
    assert {b.backup_name for b in engine.backup_list(host=host) if b.vm_uuid == name} == {"after"}
    assert len(_helpers_of(engine, host, name)) == 1  # the holder of "before" went with it
    engine.vm_delete(host=host, vm_uuid=name, progress=_noop)
    assert _helpers_of(engine, host, name) == []  # holders die with the VM
    assert not [b for b in engine.backup_list(host=host) if b.vm_uuid == name]


def test_archive_holds_the_snapshot_not_the_live_system(engine: LXDEngine, archive_host: HostSpec,
                                                        spec: VMSpec, sh: Shell) -> None:
    host, name = archive_host, spec.vm_uuid
    engine.vm_create(host=host, spec=spec, progress=_noop)
    try:
        engine.disk_attach(host=host, vm_uuid=name, disk=DiskSpec("extra", 1))
        sh(name, "echo at-snapshot > /root/data.txt")

        def meanwhile(percent: int, message: str = "") -> None:
            if message == "exporting the archive":  # the snapshot is taken, the export not yet
                sh(name, "echo later > /root/data.txt; echo later > /root/later.txt")

        engine.backup_create(host=host, vm_uuid=name, backup_name="snap-state", description="", progress=meanwhile)
        assert sh(name, "cat /root/later.txt").strip() == "later"
        archive = Path(host.options["backup_dir"]) / name / "snap-state.tar.gz"
        with tarfile.open(archive) as tar:
            files = {m.name.split("/rootfs/", 1)[-1]: m for m in tar.getmembers() if "/rootfs/" in m.name}
            assert "root/later.txt" not in files, "the archive holds the live system, not the snapshot"
            data = tar.extractfile(files["root/data.txt"])
            assert data is not None and data.read() == b"at-snapshot\n"
        assert _helpers_of(engine, host, name) == []  # the export's helper instance is gone

        # restore from the archive alone (snapshot gone) while the VM exists
        client = engine.clients.get(host)
        run_async(client, client.api.instances[name].snapshots["snap-state"].delete())
        sh(name, "echo on-extra > /mnt/extra/f.txt")
        engine.backup_restore(host=host, vm_uuid=name, backup_name="snap-state", progress=_noop)
        assert sh(name, "cat /root/data.txt").strip() == "at-snapshot"
        assert sh(name, "ls /root/later.txt 2>/dev/null || echo absent").strip() == "absent"
        assert sh(name, "cat /mnt/extra/f.txt").strip() == "on-extra"  # the VM's disk stays attached
    finally:
        engine.vm_delete(host=host, vm_uuid=name, progress=_noop)
        engine.backup_delete(host=host, vm_uuid=name, backup_name="snap-state")


def _fail_renames_into_place(monkeypatch: pytest.MonkeyPatch, helper_prefix: str) -> list[str]:
    """Make LXD's rename of a helper instance (``helper_prefix``*) to the VM's name fail, as a
    daemon error half-way through a swap would; everything else runs for real."""
    real, refused = instances.rename, []

    def rename(client: object, name: str, new_name: str) -> None:
        if name.startswith(helper_prefix) and not naming.is_internal(new_name):
            refused.append(new_name)
            raise OperationFailed(f"injected failure renaming {name} to {new_name}")
        real(client, name, new_name)  # type: ignore[arg-type]

    monkeypatch.setattr(instances, "rename", rename)
    return refused


def test_failed_swap_of_a_reinstall_keeps_the_vm(engine: LXDEngine, host: HostSpec, vm: VMInfo, spec: VMSpec,
                                                 sh: Shell, monkeypatch: pytest.MonkeyPatch) -> None:
    name = spec.vm_uuid
    sh(name, "echo old-system > /root/marker")
    engine.backup_create(host=host, vm_uuid=name, backup_name="b1", description="", progress=_noop)
    refused = _fail_renames_into_place(monkeypatch, "idcs-new-")
    with pytest.raises(errors.VMOperationFailed, match="unchanged"):
        engine.vm_reinstall(host=host, spec=spec, progress=_noop)
    assert refused == [name]
    monkeypatch.undo()
    assert engine.vm_status(host=host, vm_uuid=name).status == "running"  # back, and started again
    assert sh(name, "cat /root/marker").strip() == "old-system"
    assert [b.backup_name for b in engine.backup_list(host=host) if b.vm_uuid == name] == ["b1"]
    assert _helpers_of(engine, host, name) == []
    assert [v.vm_uuid for v in engine.vm_list(host=host)].count(name) == 1


def test_failed_swap_of_an_archive_restore_keeps_the_vm(engine: LXDEngine, archive_host: HostSpec, spec: VMSpec,
                                                        sh: Shell, monkeypatch: pytest.MonkeyPatch) -> None:
    host, name = archive_host, spec.vm_uuid
    engine.vm_create(host=host, spec=spec, progress=_noop)
    try:
        sh(name, "echo archived > /root/v.txt")
        engine.backup_create(host=host, vm_uuid=name, backup_name="a1", description="", progress=_noop)
        client = engine.clients.get(host)
        run_async(client, client.api.instances[name].snapshots["a1"].delete())  # only the archive is left
        sh(name, "echo current > /root/v.txt")
        engine.backup_create(host=host, vm_uuid=name, backup_name="a2", description="", progress=_noop)
        refused = _fail_renames_into_place(monkeypatch, "idcs-rst-")
        with pytest.raises(errors.VMOperationFailed, match="injected"):
            engine.backup_restore(host=host, vm_uuid=name, backup_name="a1", progress=_noop)
        assert refused == [name]
        monkeypatch.undo()
        assert engine.vm_status(host=host, vm_uuid=name).status == "running"
        assert sh(name, "cat /root/v.txt").strip() == "current"
        assert _helpers_of(engine, host, name) == []
        # without the fault the restore works, and the snapshot a2 of the replaced instance is kept
        engine.backup_restore(host=host, vm_uuid=name, backup_name="a1", progress=_noop)
        assert sh(name, "cat /root/v.txt").strip() == "archived"
        engine.backup_restore(host=host, vm_uuid=name, backup_name="a2", progress=_noop)
        assert sh(name, "cat /root/v.txt").strip() == "current"
    finally:
        engine.vm_delete(host=host, vm_uuid=name, progress=_noop)
        for backup in ("a1", "a2"):
            engine.backup_delete(host=host, vm_uuid=name, backup_name=backup)
    assert _helpers_of(engine, host, name) == []
