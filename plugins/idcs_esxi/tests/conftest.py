"""Session fixtures: the patched vcsim (built once, cached) running the vCenter model and
the standalone ESXi model, each with a template and two ISO files on its datastore.

A simulator that cannot be built or started fails the session with the reason (Go or
the govmomi sources missing: run ``scripts/backends/esxi.sh``); nothing is skipped.
Both are stopped by PID at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from idcs_esxi import testing
from idcs_esxi.engine import ESXiEngine

from idcs_core.types import HostSpec

MODELS = ("vpx", "esx")


@pytest.fixture(scope="session")
def esxi_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("esxi")


@pytest.fixture(scope="session")
def vcsim_binary() -> Path:
    return testing.build()


def _started(model: str, workdir: Path) -> testing.Vcsim:
    sim = testing.start(model, workdir)
    testing.make_template(sim)
    return sim


@pytest.fixture(scope="session", params=MODELS)
def vcsim(request: pytest.FixtureRequest, vcsim_binary: Path, esxi_workdir: Path) -> Iterator[testing.Vcsim]:
    """One simulator per model for the session (the kit runs against each)."""
    sim = _started(request.param, esxi_workdir / request.param)
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def vpx(vcsim_binary: Path, esxi_workdir: Path) -> Iterator[testing.Vcsim]:
    """A vCenter-model simulator of the engine's own tests."""
    sim = _started("vpx", esxi_workdir / "own-vpx")
    yield sim
    sim.stop()


@pytest.fixture
def engine() -> Iterator[ESXiEngine]:
    eng = ESXiEngine()
    yield eng
    eng.sessions.close_all()


def host_spec(sim: testing.Vcsim, name: str = "esxi-test", **options: object) -> HostSpec:
    return HostSpec(name=name, server_type="vSphereESXi", addr=sim.addr, user=sim.user, password=sim.password,
                    options={"verify_tls": False, **options})
