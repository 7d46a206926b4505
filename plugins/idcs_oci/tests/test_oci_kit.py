"""The engine conformance kit (idcs_core.testing.kit) against the session's real Docker Engine."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest
from idcs_oci.testing import DockerBackend

from idcs_core.testing.kit import EngineUnderTest, KitTests


@pytest.fixture(scope="module")
def idcs_engine(oci_backend: DockerBackend) -> Iterator[EngineUnderTest]:
    dc = oci_backend.client()
    spec = oci_backend.host_spec()

    def write_file(vm: str, path: str, text: str) -> None:
        code, out = dc.containers.get(vm).exec_run(["sh", "-c", 'printf %s "$1" > "$2"', "_", text, path])
        assert code == 0, out

    def read_file(vm: str, path: str) -> str | None:
        code, out = dc.containers.get(vm).exec_run(["cat", path])
        return out.decode() if code == 0 else None

    def make_foreign(name: str) -> None:
        dc.containers.run(oci_backend.image, name=name, detach=True, network=oci_backend.network, init=True)

    def remove_foreign(name: str) -> None:
        with contextlib.suppress(Exception):
            dc.containers.get(name).remove(force=True)

    pid = oci_backend.daemon.pid
    yield EngineUnderTest(
        server_type="OCInterface", server_addr=spec.addr, server_user="", server_pass="",
        options=dict(spec.options), image=oci_backend.image, unreachable_addr="unix:///tmp/no-such-docker.sock",
        write_file=write_file, read_file=read_file, disk_path="/mnt/{disk}",
        http_port=80, http_body="hello from idcs-test",
        make_foreign_vm=make_foreign, remove_foreign_vm=remove_foreign,
        # SIGSTOP freezes the daemon: it stops answering without losing anything
        take_down=lambda: os.kill(pid, signal.SIGSTOP), bring_up=lambda: os.kill(pid, signal.SIGCONT),
        vm_spec={"cpu_num": 1, "ram_num": 64, "hdd_num": 1}, host_timeout=3.0,
    )
    dc.close()


class TestOCIKit(KitTests):
    """Every applicable kit case, through the REST API of a real server."""
