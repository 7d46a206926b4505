"""The engine conformance kit (idcs_core.testing.kit) against the session's real LXD and Incus.

``backend`` is parametrised over both daemons, so every kit case runs once against LXD 5.0
and once against Incus 6.0, through the REST API of a real idcs server.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from idcs_lxd import guest, testing
from idcs_lxd.client import Client, open_client, wait_operation

from idcs_core.testing.kit import EngineUnderTest, KitTests


def _exec(client: Client, vm: str, command: list[str], stdin: bytes = b"") -> tuple[int, str]:
    result = guest.run(client, vm, command, stdin=stdin, timeout=60)
    return result.exit_code, result.stdout.decode(errors="replace")


@pytest.fixture(scope="module")
def idcs_engine(backend: testing.Backend, workdir: Path) -> Iterator[EngineUnderTest]:
    client = open_client(str(backend.socket_path))

    def write_file(vm: str, path: str, text: str) -> None:
        code, out = _exec(client, vm, ["sh", "-c", 'mkdir -p "$(dirname "$2")" && printf %s "$1" > "$2"', "_",
                                       text, path])
        assert code == 0, out

    def read_file(vm: str, path: str) -> str | None:
        code, out = _exec(client, vm, ["cat", path])
        return out if code == 0 else None

    def make_foreign(name: str) -> None:
        op = client.api.instances.post(json={"name": name, "source": {"type": "image", "alias": backend.image_alias},
                                             "profiles": ["default"]})
        wait_operation(client, op.json()["operation"], timeout=60)
        op = client.api.instances[name].state.put(json={"action": "start", "timeout": 30})
        wait_operation(client, op.json()["operation"], timeout=60)

    def remove_foreign(name: str) -> None:
        with contextlib.suppress(Exception):
            op = client.api.instances[name].state.put(json={"action": "stop", "force": True, "timeout": 30})
            wait_operation(client, op.json()["operation"], timeout=60)
        with contextlib.suppress(Exception):
            op = client.api.instances[name].delete()
            wait_operation(client, op.json()["operation"], timeout=60)

    pid = backend.pid
    assert pid is not None, f"the {backend.kind} daemon was not started by this session: cannot take it down"
    yield EngineUnderTest(
        server_type="LXD", server_addr=str(backend.socket_path), server_user="", server_pass="",
        options={"nat_listen": "127.0.0.1", "cert_dir": str(workdir / "certs")},
        image=backend.image_alias, unreachable_addr=str(workdir / "no-such-daemon" / "unix.socket"),
        write_file=write_file, read_file=read_file, disk_path="/mnt/{disk}",
        http_port=80, http_body="idcs-busybox",
        make_foreign_vm=make_foreign, remove_foreign_vm=remove_foreign,
        # SIGSTOP freezes the daemon: it stops answering without losing anything
        take_down=lambda: os.kill(pid, signal.SIGSTOP), bring_up=lambda: os.kill(pid, signal.SIGCONT),
        # containers have no CD-ROM: LXD mounts ISOs only on virtual machines, which need KVM
        unsupported=frozenset({"iso"}),
        vm_spec={"cpu_num": 1, "ram_num": 128, "hdd_num": 1}, host_timeout=3.0,
    )
    testing.cleanup(backend, "kit-")  # whatever a failed case left behind


class TestLXDKit(KitTests):
    """Every applicable kit case, through the REST API of a real server, on LXD and on Incus."""
