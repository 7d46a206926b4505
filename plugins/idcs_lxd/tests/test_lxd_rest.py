"""Backups across a reinstall, through the REST API of a real idcs server, on LXD and Incus.

The engine keeps a VM's backups through a reinstall (the replaced instance holds
its snapshots); when a backup is gone anyway, the core's reinstall task drops
its record and says so, so no "ready" backup is left that cannot be restored.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from idcs_lxd import guest, naming, testing
from idcs_lxd.client import open_client, run_async

from idcs_core.testing.kit import EngineUnderTest
from idcs_core.testing.kit_support import Kit


@pytest.fixture(scope="module")
def kit(backend: testing.Backend, workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    client = open_client(str(backend.socket_path))

    def run(vm: str, script: str) -> str:
        result = guest.run(client, naming.instance_name(vm), ["/bin/sh", "-c", script])
        assert result.exit_code == 0, (script, result)
        return result.stdout.decode()

    eut = EngineUnderTest(
        server_type="LXD", server_addr=str(backend.socket_path), server_user="", server_pass="",
        options={"nat_listen": "127.0.0.1", "cert_dir": str(workdir / "certs")}, image=backend.image_alias,
        unreachable_addr=str(workdir / "no-such-daemon" / "unix.socket"),
        write_file=lambda vm, path, text: run(vm, f"printf %s '{text}' > {path}") and None,
        read_file=lambda vm, path: run(vm, f"cat {path} 2>/dev/null || echo -n '<absent>'"),
        vm_spec={"cpu_num": 1, "ram_num": 128, "hdd_num": 1})
    kit = Kit(eut, Path(tmp_path_factory.mktemp("lxd-rest")))
    try:
        kit.start()
        yield kit
    finally:
        kit.stop()
        testing.cleanup(backend, "kit-")


def _backup(kit: Kit, vm: str, description: str) -> str:
    started = kit.api.post(kit.vm_path("backup/create", vm), {"description": description})
    kit.wait(started)
    return str(started["backup_name"])


def _backups(kit: Kit, vm: str) -> dict[str, str]:
    return {b["backup_name"]: b["status"] for b in kit.api.get(kit.vm_path("backup/detail", vm))}


def _used_backups(kit: Kit) -> int:
    return int(kit.api.get("/api/users/current")["quota"]["used_backups"])


def test_backups_across_a_reinstall(kit: Kit, backend: testing.Backend) -> None:
    """A backup survives the reinstall and restores; one the host lost is dropped, and the task says so."""
    vm = kit.create_vm("keep")
    write, read = kit.guest()  # type: ignore[misc]
    write(vm, "/root/state.txt", "before-reinstall")
    kept, lost = _backup(kit, vm, "kept"), _backup(kit, vm, "lost")
    used = _used_backups(kit)
    # the host loses one backup behind OpenIDCS's back (as an engine whose reinstall cannot keep them would)
    client = open_client(str(backend.socket_path))
    run_async(client, client.api.instances[naming.instance_name(vm)].snapshots[lost].delete())
    assert _backups(kit, vm) == {kept: "ready", lost: "ready"}  # not known yet

    task = kit.wait(kit.api.post(kit.vm_path("reinstall", vm), {}))
    assert task["result"]["backups_removed"] == [lost], task
    assert lost in task["result"]["message"] and "removed" in task["result"]["message"]
    assert task["message"] == task["result"]["message"]  # the task itself says what was lost
    assert read(vm, "/root/state.txt") == "<absent>"  # a new system
    assert _backups(kit, vm) == {kept: "ready"}
    assert _used_backups(kit) == used - 1
    kit.expect("POST", kit.vm_path("backup/restore", vm), 404, {"backup_name": lost})

    kit.wait(kit.api.post(kit.vm_path("backup/restore", vm), {"backup_name": kept}))
    kit.ensure_running(vm)
    assert read(vm, "/root/state.txt") == "before-reinstall"
