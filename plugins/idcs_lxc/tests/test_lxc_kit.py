"""The engine conformance kit against real LXC 5.0, through the REST API: on this machine
(``local``) and over SSH to an sshd of the test's own (``ssh``)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from idcs_lxc.testing import PREFIX, Backend

from idcs_core.testing.kit import EngineUnderTest, KitTests


@pytest.fixture(scope="module", params=["local", "ssh"])
def idcs_engine(request: pytest.FixtureRequest, backend: Backend) -> Iterator[EngineUnderTest]:
    mode: str = request.param

    def write_file(vm: str, path: str, text: str) -> None:
        done = backend.attach(vm, ["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "_", path],
                              text.encode())
        assert done.returncode == 0, done.stderr

    def read_file(vm: str, path: str) -> str | None:
        done = backend.attach(vm, ["cat", path])
        return done.stdout.decode() if done.returncode == 0 else None

    def make_foreign(name: str) -> str:
        vm = f"{PREFIX}{name}"
        subprocess.run(["lxc-create", "-P", backend.lxcpath, "-n", vm, "-t", "busybox"], check=True,
                       capture_output=True)
        return vm

    def remove_foreign(vm: str) -> None:
        subprocess.run(["lxc-destroy", "-P", backend.lxcpath, "-f", "-n", vm], capture_output=True)

    sshd = backend.sshd
    yield EngineUnderTest(
        server_type="Containers", server_addr=backend.addr(mode), server_user="root", server_pass="",
        options=backend.options(mode), image="idcs-busybox.tar.gz",
        unreachable_addr="ssh://root@127.0.0.1:1",
        write_file=write_file, read_file=read_file, disk_path="/mnt/{disk}",
        http_port=80, http_body="idcs-busybox",
        make_foreign_vm=make_foreign, remove_foreign_vm=remove_foreign,
        # over SSH the host goes down for real: sshd and its sessions are killed, then started again
        take_down=sshd.stop if mode == "ssh" else None,
        bring_up=sshd.start if mode == "ssh" else None,
        vm_spec={"cpu_num": 1, "ram_num": 128, "hdd_num": 1}, host_timeout=5.0,
    )


class TestLXCKit(KitTests):
    """Every applicable kit case, locally and over SSH."""
