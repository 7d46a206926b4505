"""Fixtures of the core tests: the TestLab engine, and real servers on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from testlab import PASSWORD, TestLabEngine

from idcs_core.plugins import PluginRegistry
from idcs_core.testing.databases import database_url, drop_postgres_schema
from idcs_core.testing.server import ApiClient, LiveServer

_names = itertools.count(1)
UNLIMITED = {k: -1 for k in ("max_vms", "max_cpu", "max_ram", "max_hdd", "max_nat", "max_ips", "max_backups")}


@pytest.fixture(scope="session")
def lab() -> TestLabEngine:
    return TestLabEngine()


@pytest.fixture(scope="session")
def registry(lab: TestLabEngine) -> PluginRegistry:
    reg = PluginRegistry()
    assert reg.register_engine("TestLab", lab) is not None, reg.failures
    return reg


@pytest.fixture(autouse=True)
def _reset_faults(lab: TestLabEngine) -> Iterator[None]:
    lab.faults.reset()
    yield
    lab.faults.reset()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, registry: PluginRegistry, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[LiveServer]:
    """A real uvicorn server with the TestLab engine, once per module and database."""
    folder = tmp_path_factory.mktemp(f"srv-{request.param}")
    url = database_url(request.param, folder)
    srv = LiveServer(folder, database_url=url, plugins=registry, host_timeout=2.0).start()
    yield srv
    srv.stop()
    if request.param == "postgresql":
        drop_postgres_schema(url)


@pytest.fixture
def admin(server: LiveServer) -> Iterator[ApiClient]:
    client = server.admin()
    yield client
    client.close()


@pytest.fixture
def host(admin: ApiClient) -> Iterator[str]:
    """A fresh TestLab host; removed (with its VM records) afterwards."""
    name = f"lab{next(_names)}"
    admin.post("/api/server/create", {"server_name": name, "server_type": "TestLab",
                                      "server_addr": f"lab://{name}", "server_user": "root",
                                      "server_pass": PASSWORD, "ports_start": 20000, "ports_close": 20010})
    yield name
    admin.call("DELETE", f"/api/server/delete/{name}", params={"force": "true"})


@pytest.fixture
def user_factory(admin: ApiClient, server: LiveServer) -> Iterator[object]:
    """Make normal users (with optional quota) and log them in."""
    made: list[int] = []

    def make(quota: dict | None = None) -> ApiClient:
        """A user with ``quota`` (default: unlimited, as before safe defaults) who may use every host
        that exists now (hosts are granted explicitly since issue 10)."""
        name = f"user{next(_names)}"
        data = admin.post("/api/users", {"username": name, "password": "pw-" + name, "email": f"{name}@example.com",
                                         "quota": UNLIMITED | (quota or {})})
        made.append(data["id"])
        for hs in admin.get("/api/server/detail", params={"format": "list"}):
            admin.post(f"/api/users/{data['id']}/hosts/{hs['server_name']}", {})
        client = server.client()
        client.login(name, "pw-" + name)
        return client

    yield make
    for uid in made:
        admin.call("DELETE", f"/api/users/{uid}")
