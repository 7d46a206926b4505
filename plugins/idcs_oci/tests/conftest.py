"""Fixtures: one real Docker daemon per session (see ``idcs_oci.testing``), the engine, VMs."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
from idcs_oci.engine import OCIEngine
from idcs_oci.testing import DockerBackend

from idcs_core import errors
from idcs_core.types import HostSpec, VMInfo, VMSpec


@pytest.fixture(scope="session")
def backend(oci_backend: DockerBackend) -> DockerBackend:
    """The session's one Docker daemon (root conftest.py: shared with the core and kit tests)."""
    return oci_backend


@pytest.fixture(scope="session")
def engine() -> Iterator[OCIEngine]:
    e = OCIEngine()
    yield e
    e.clients.close_all()


@pytest.fixture(scope="session")
def host(backend: DockerBackend) -> HostSpec:
    return backend.host_spec()


@pytest.fixture(scope="session")
def dc(backend: DockerBackend) -> Iterator[docker.DockerClient]:
    """A plain SDK client to look at what the engine did, independently of it."""
    c = backend.client()
    yield c
    c.close()


class Progress:
    """Records progress calls, and checks they are sane."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    def __call__(self, percent: int, message: str = "") -> None:
        assert 0 <= percent <= 100
        self.calls.append((percent, message))


@pytest.fixture
def progress() -> Progress:
    return Progress()


@pytest.fixture
def make_vm(engine: OCIEngine, host: HostSpec, backend: DockerBackend) -> Iterator[Callable[..., VMInfo]]:
    """Create VMs from the busybox image (1 CPU, 64 MB, 1 GB); each is deleted after the test."""
    made: list[str] = []

    def make(**overrides: Any) -> VMInfo:
        fields: dict[str, Any] = {"vm_uuid": f"t-{uuid.uuid4().hex[:10]}", "os_name": backend.image,
                                  "cpu_num": 1, "ram_num": 64, "hdd_num": 1, **overrides}
        made.append(fields["vm_uuid"])
        return engine.vm_create(host=host, spec=VMSpec(**fields), progress=Progress())

    yield make
    for vm in made:
        with contextlib.suppress(errors.BadRequest):  # a test may have used an invalid id on purpose
            engine.vm_delete(host=host, vm_uuid=vm, progress=Progress())
