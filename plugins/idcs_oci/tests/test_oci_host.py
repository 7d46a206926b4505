"""Host hooks against a real dockerd: connect, status, images, plugin loading, host down."""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from pathlib import Path

import docker
import pytest
from idcs_oci.engine import OCIEngine
from idcs_oci.testing import DockerBackend, MakeVM

from idcs_core import errors
from idcs_core.plugins import load_plugins
from idcs_core.types import HostSpec


def test_connect_and_status(engine: OCIEngine, host: HostSpec, backend: DockerBackend) -> None:
    status = engine.host_connect(host=host)
    assert status.online is True
    assert status.version and status.version[0].isdigit()
    assert status.vms_count is not None and status.vms_count >= 0
    # The daemon listens on a unix socket of this machine: usage comes from this kernel.
    assert status.extra["local"] is True
    for value in (status.cpu_usage, status.memory_usage, status.disk_usage):
        assert value is not None and 0.0 <= value <= 100.0
    assert status.extra["docker_root_dir"].startswith(str(backend.daemon.base))

    again = engine.host_status(host=host)
    assert again.version == status.version


def test_status_counts_containers(engine: OCIEngine, host: HostSpec, make_vm: MakeVM) -> None:
    before = engine.host_status(host=host).vms_count
    make_vm()
    assert engine.host_status(host=host).vms_count == before + 1


def test_host_down_is_unreachable_quickly(engine: OCIEngine) -> None:
    with tempfile.TemporaryDirectory(prefix="ioci-", dir="/tmp") as d:
        # A socket file nobody listens on (a daemon that died), and a path with no socket at all.
        stale = Path(d) / "stale.sock"
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(stale))
        s.close()
        for addr in (f"unix://{stale}", f"unix://{d}/missing.sock", "tcp://127.0.0.1:9"):
            down = HostSpec(name="down", server_type="OCInterface", addr=addr, user="", password="",
                            options={"timeout": 3})
            for hook in (engine.host_connect, engine.host_status, engine.vm_list):
                started = time.monotonic()
                with pytest.raises(errors.HostUnreachable) as caught:
                    hook(host=down)
                assert time.monotonic() - started < 2.0
                assert addr in caught.value.msg or "Docker" in caught.value.msg
                assert caught.value.code == 1003


def test_bad_address_and_options_are_bad_requests(engine: OCIEngine, backend: DockerBackend) -> None:
    with pytest.raises(errors.BadRequest, match="not a Docker URL"):
        engine.host_connect(host=HostSpec("x", "OCInterface", "ftp://host", "", ""))
    with pytest.raises(errors.BadRequest, match="stop_timeout"):
        engine.host_status(host=backend.host_spec(stop_timeout="soon"))


def test_os_images_grouped_and_own_images_hidden(engine: OCIEngine, host: HostSpec, backend: DockerBackend,
                                                 make_vm: MakeVM, dc: docker.DockerClient) -> None:
    vm = make_vm()
    engine.backup_create(host=host, vm_uuid=vm.vm_uuid, backup_name="b1", description="", progress=print)
    dc.api.tag(backend.image, "ubuntu", "22.04")
    try:
        found = engine.os_images(host=host)
        files = {i.file: i for i in found}
        assert files[backend.image].family == "busybox"
        assert files["ubuntu:22.04"].family == "ubuntu"
        assert files["ubuntu:22.04"].name == "Ubuntu 22.04"
        assert not any(f.startswith(("idcs-backup/", "idcs-state/")) for f in files)
    finally:
        dc.api.remove_image("ubuntu:22.04")


def test_engine_loads_through_the_core_registry(host: HostSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDCS_LOAD_ENGINES", "OCInterface")
    registry = load_plugins()
    assert not [f for f in registry.failures if f.name == "OCInterface"]
    oci = registry.engine("OCInterface")
    for cap in ("vm_create", "vm_update", "vm_delete", "vm_reinstall", "power", "scan", "images",
                "password", "terminal", "ip", "nat", "disk", "backup", "backup_scan"):
        assert cap in oci.capabilities, cap
    assert "iso" not in oci.capabilities
    assert oci.description["title"] == "Docker / Podman"

    status = asyncio.run(oci.call("host_status", host, timeout=10))
    assert status.online
    with pytest.raises(errors.NotSupported):
        asyncio.run(oci.call("iso_mount", host, timeout=5, vm_uuid="x", iso_name="y"))
    oci.plugin.clients.close_all()


def test_tcp_with_mutual_tls(engine: OCIEngine, backend: DockerBackend, make_vm: MakeVM) -> None:
    tls_host = backend.tls_host_spec()
    status = engine.host_connect(host=tls_host)
    assert status.online and status.extra["local"] is False  # not a local socket: no usage numbers
    assert status.cpu_usage is None
    vm = make_vm()
    assert vm.vm_uuid in {v.vm_uuid for v in engine.vm_list(host=tls_host)}
    # A client certificate is required, and the daemon's certificate is verified.
    no_client_cert = backend.tls_host_spec(tls_client_cert="", tls_client_key="")
    with pytest.raises(errors.HostUnreachable):
        engine.host_connect(host=no_client_cert)
    wrong_ca = backend.tls_host_spec(tls_ca_cert=backend.daemon.tls["client_cert"])
    with pytest.raises(errors.HostUnreachable):
        engine.host_connect(host=wrong_ca)
    # Plain HTTP to the TLS port is refused too.
    with pytest.raises(errors.HostUnreachable):
        engine.host_connect(host=backend.tls_host_spec(tls=False))
    engine.host_close(host=tls_host)
