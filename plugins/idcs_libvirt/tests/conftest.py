"""Session fixtures: a real libvirtd + QEMU (TCG), the test network/pool and the tiny guest.

libvirtd and virtlogd are started once per session (or reused when already running) and
stopped by PID at the end, after the domains and volumes named ``lvt-``/``kit-``* are deleted.
A back end that cannot start fails the session with its error: nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import libvirt
import pytest
from idcs_libvirt import testing
from idcs_libvirt.engine import LibvirtEngine
from idcs_libvirt.testing import host_options

from idcs_core.types import HostSpec

PREFIX = "lvt-"


@pytest.fixture(scope="session")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[testing.Backend]:
    running = testing.start_backend(tmp_path_factory.mktemp("libvirt-backend"))
    yield running
    testing.stop_backend(running, prefix=PREFIX)


@pytest.fixture
def conn(backend: testing.Backend) -> Iterator[libvirt.virConnect]:
    """A fresh connection per test (a test may kill and restart libvirtd)."""
    c = backend.connect()
    yield c
    c.close()


@pytest.fixture(scope="session")
def engine() -> LibvirtEngine:
    return LibvirtEngine()


@pytest.fixture(scope="session")
def host(backend: testing.Backend) -> HostSpec:
    return HostSpec(name="lvt-host", server_type="QEMU", addr=backend.uri, user="", password="",
                    options=host_options())
