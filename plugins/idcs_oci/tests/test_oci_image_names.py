"""One image, one name, on Docker and on Podman: ``debian:12`` and ``docker.io/library/debian:12``
are the same image. Podman lists every image as ``docker.io/...``; the engine lists, creates and
reinstalls with Docker's short form on both, so the name the create form offers is the same on
every host and the core's "is it one of the host's images" check agrees with what a user types."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import docker
import pytest
from idcs_oci import images
from idcs_oci.containers import no_progress
from idcs_oci.engine import OCIEngine
from idcs_oci.testing import DockerBackend

from idcs_core.types import VMSpec


@pytest.fixture(params=["docker", "podman"], scope="module")
def daemon(request: pytest.FixtureRequest) -> Iterator[tuple[DockerBackend, docker.DockerClient]]:
    backend: DockerBackend = request.getfixturevalue("oci_backend" if request.param == "docker"
                                                     else "podman_service")
    client = backend.client()
    client.api.tag(backend.image, "docker.io/library/debian", "12")  # as `docker pull debian:12` leaves it
    try:
        yield backend, client
    finally:
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_image("debian:12")
        client.close()


@pytest.mark.parametrize(("given", "same_as"), [
    ("debian", "debian:latest"), ("debian:12", "debian:12"), ("docker.io/library/debian:12", "debian:12"),
    ("library/debian:12", "debian:12"), ("index.docker.io/library/debian:12", "debian:12"),
    ("docker.io/idcs-test/busybox:latest", "idcs-test/busybox:latest"), ("quay.io/library/x:1", "quay.io/library/x:1"),
    ("localhost:5000/x", "localhost:5000/x:latest"), ("debian@sha256:" + "a" * 64, "debian@sha256:" + "a" * 64),
])
def test_one_name_per_image(given: str, same_as: str) -> None:
    assert images.canonical(given) == same_as


def test_the_list_offers_the_short_name_on_both(daemon: tuple[DockerBackend, docker.DockerClient]) -> None:
    backend, _client = daemon
    engine = OCIEngine()
    try:
        files = [i.file for i in engine.os_images(host=backend.host_spec("names"))]
    finally:
        engine.clients.close_all()
    assert "debian:12" in files and backend.image in files, files
    assert not [f for f in files if f.startswith("docker.io/")], files
    assert len(files) == len(set(files)), files


def test_create_and_reinstall_agree_whatever_the_spelling(daemon: tuple[DockerBackend, docker.DockerClient]) -> None:
    backend, _client = daemon
    engine, host = OCIEngine(), backend.host_spec("names")
    vm = f"t-{uuid.uuid4().hex[:10]}"
    try:
        info = engine.vm_create(host=host, spec=VMSpec(vm_uuid=vm, os_name="docker.io/library/debian:12", cpu_num=1,
                                                       ram_num=64, hdd_num=1), progress=no_progress)
        assert info.os_name == "debian:12"
        assert {v.vm_uuid: v.os_name for v in engine.vm_list(host=host)}[vm] == "debian:12"
        info = engine.vm_reinstall(host=host, spec=VMSpec(vm_uuid=vm, os_name=f"docker.io/{backend.image}",
                                                          cpu_num=1, ram_num=64, hdd_num=1), progress=no_progress)
        assert info.os_name == backend.image
        info = engine.vm_reinstall(host=host, spec=VMSpec(vm_uuid=vm, os_name="debian:12", cpu_num=1, ram_num=64,
                                                          hdd_num=1), progress=no_progress)
        assert info.os_name == "debian:12" and engine.vm_status(host=host, vm_uuid=vm).os_name == "debian:12"
        # a container made behind the engine's back, from Podman's spelling, is listed by the short one
        foreign = _client.containers.create("docker.io/library/debian:12", name=f"{vm}-foreign")
        try:
            assert {v.vm_uuid: v.os_name for v in engine.vm_list(host=host)}[f"{vm}-foreign"] == "debian:12"
        finally:
            foreign.remove(force=True)
    finally:
        with contextlib.suppress(Exception):
            engine.vm_delete(host=host, vm_uuid=vm, progress=no_progress)
        engine.clients.close_all()
