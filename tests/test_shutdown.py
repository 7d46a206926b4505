"""At shut-down the server lets each engine release what it holds for its hosts."""

from __future__ import annotations

from pathlib import Path

import pytest
from testlab import PASSWORD, TestLabEngine

from idcs_core.plugins import PluginRegistry
from idcs_core.testing.server import LiveServer


def test_host_close_for_every_host_at_shutdown(registry: PluginRegistry, lab: TestLabEngine,
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    srv = LiveServer(Path(tmp_path_factory.mktemp("shutdown")), plugins=registry, host_timeout=2.0).start()
    admin = srv.admin()
    for name in ("sd1", "sd2"):
        admin.post("/api/server/create", {"server_name": name, "server_type": "TestLab", "server_addr": f"lab://{name}",
                                          "server_user": "root", "server_pass": PASSWORD})
    lab.faults.down.add("lab://sd2")  # a host that is down must not hold up the shut-down
    for name in ("sd1", "sd2"):
        lab.hosts[f"lab://{name}"].calls.clear()
    admin.close()
    srv.stop()
    assert lab.hosts["lab://sd1"].calls.count("host_close") == 1
    assert lab.hosts["lab://sd2"].calls.count("host_close") == 1
