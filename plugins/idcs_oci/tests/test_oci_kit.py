"""The engine conformance kit (idcs_core.testing.kit) against the session's real Docker Engine
and its real Podman service (``backend`` is parametrised: every case runs against both)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest
from idcs_oci import forwarders
from idcs_oci.testing import DockerBackend

from idcs_core.testing.kit import EngineUnderTest, KitTests
from idcs_core.testing.kit_support import cgroup_resources


@pytest.fixture(scope="module", params=["docker", "podman"])
def idcs_engine(request: pytest.FixtureRequest) -> Iterator[EngineUnderTest]:
    oci_backend: DockerBackend = request.getfixturevalue("oci_backend" if request.param == "docker"
                                                          else "podman_service")
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

    def drop_forward(_vm: str, host_port: int, protocol: str) -> None:
        """The rule's forwarder container removed behind OpenIDCS's back (as by ``docker rm -f``)."""
        dc.containers.get(forwarders.container_name(host_port, protocol)).remove(force=True)

    image = oci_backend.image  # one name on both: the engine lists Podman's docker.io/... by its short name
    pid = oci_backend.daemon.pid
    yield EngineUnderTest(
        server_type="OCInterface", server_addr=spec.addr, server_user="", server_pass="",
        options=dict(spec.options), image=image, unreachable_addr="unix:///tmp/no-such-docker.sock",
        write_file=write_file, read_file=read_file, disk_path="/mnt/{disk}",
        http_port=80, http_body="hello from idcs-test",
        make_foreign_vm=make_foreign, remove_foreign_vm=remove_foreign,
        # SIGSTOP freezes the daemon: it stops answering without losing anything
        take_down=lambda: os.kill(pid, signal.SIGSTOP), bring_up=lambda: os.kill(pid, signal.SIGCONT),
        vm_spec={"cpu_num": 1, "ram_num": 64, "hdd_num": 1}, host_timeout=3.0,
        # CPU and memory limits change live (docker update); the guest reads them from its cgroup
        guest_resources=lambda vm: cgroup_resources(lambda path: read_file(vm, path)), update_applies="live",
        drop_forward=drop_forward,
    )
    dc.close()


class TestOCIKit(KitTests):
    """Every applicable kit case, through the REST API of a real server."""
