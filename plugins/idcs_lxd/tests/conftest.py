"""Session fixtures: a real LXD 5.0 and a real Incus 6.0 daemon, each with a busybox image.

Every test that uses ``host`` runs once per daemon. Daemons are started once per
session (or reused when already running) and stopped by PID at the end, after
the instances and volumes named ``PREFIX``* are deleted. A daemon that cannot
start fails the session with its log tail: nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from idcs_lxd import testing
from idcs_lxd.engine import LXDEngine

from idcs_core.types import HostSpec, VMInfo, VMSpec

PREFIX = "idcst-"


def _progress(percent: int, message: str = "") -> None:
    assert 0 <= percent <= 100


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lxd-backends")


@pytest.fixture(scope="session", params=testing.KINDS)
def backend(request: pytest.FixtureRequest, workdir: Path) -> Iterator[testing.Backend]:
    running = testing.start_backend(request.param, workdir / request.param)
    yield running
    testing.stop_backend(running, prefix=PREFIX)


@pytest.fixture(scope="session")
def engine() -> LXDEngine:
    return LXDEngine()


@pytest.fixture(scope="session")
def host(backend: testing.Backend, workdir: Path) -> HostSpec:
    return backend.host_spec(f"test-{backend.kind}", nat_listen="127.0.0.1", cert_dir=str(workdir / "certs"))


@pytest.fixture(scope="session")
def archive_host(backend: testing.Backend, workdir: Path) -> HostSpec:
    """The same daemon, with backups also exported as archives into ``backup_dir``."""
    return backend.host_spec(f"test-{backend.kind}-archives", nat_listen="127.0.0.1",
                             cert_dir=str(workdir / "certs"), backup_dir=str(workdir / f"archives-{backend.kind}"))


@pytest.fixture
def progress() -> object:
    return _progress


@pytest.fixture
def spec(backend: testing.Backend) -> VMSpec:
    return VMSpec(vm_uuid=testing.unique_name(PREFIX), os_name=backend.image_alias, cpu_num=1, ram_num=128,
                  hdd_num=2)


@pytest.fixture
def vm(engine: LXDEngine, host: HostSpec, spec: VMSpec) -> Iterator[VMInfo]:
    """A running busybox container, deleted afterwards."""
    info = engine.vm_create(host=host, spec=spec, progress=_progress)
    yield info
    engine.vm_delete(host=host, vm_uuid=spec.vm_uuid, progress=_progress)


@pytest.fixture
def sh(engine: LXDEngine, host: HostSpec) -> object:
    """``sh(vm_uuid, script) -> stdout``: run a shell script in the guest, asserting success."""
    from idcs_lxd import guest, naming

    def run(vm_uuid: str, script: str) -> str:
        result = guest.run(engine.clients.get(host), naming.instance_name(vm_uuid), ["/bin/sh", "-c", script])
        assert result.exit_code == 0, (script, result)
        return result.stdout.decode()

    return run
