"""Host-level behaviour: 500 VMs listed in a constant number of round trips, and the
simulator killed mid-test -> the host shows offline and nothing is lost in the database."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from idcs_esxi import testing
from idcs_esxi.engine import ESXiEngine

from idcs_core.testing.server import LiveServer

from .conftest import host_spec

MANY = 500


@pytest.fixture(scope="module")
def crowded(vcsim_binary: Path, esxi_workdir: Path) -> Iterator[testing.Vcsim]:
    """A standalone-ESXi model holding 500 VMs."""
    sim = testing.start("esx", esxi_workdir / "crowded", vms=MANY)
    yield sim
    sim.stop()


def test_listing_500_vms_costs_the_same_round_trips_as_listing_4(
        engine: ESXiEngine, crowded: testing.Vcsim, vpx: testing.Vcsim) -> None:
    counts: dict[str, tuple[int, int]] = {}
    for label, sim in (("small", vpx), ("crowded", crowded)):
        host = host_spec(sim, name=f"esxi-{label}")
        engine.host_connect(host=host)
        conn = engine.sessions.get(host)
        before = conn.round_trips
        vms = engine.vm_list(host=host)
        counts[label] = (conn.round_trips - before, len(vms))
        before = conn.round_trips
        backups = engine.backup_list(host=host)
        assert conn.round_trips - before == 1 and backups == []
        before = conn.round_trips
        assert engine.host_status(host=host).vms_count == len(vms)
        assert conn.round_trips - before == 1
    assert counts["crowded"][1] == MANY and counts["small"][1] >= 4
    assert counts["crowded"][0] == counts["small"][0] == 1, counts
    # the index the list built answers lookups without another search
    host = host_spec(crowded, name="esxi-crowded")
    conn = engine.sessions.get(host)
    before = conn.round_trips
    last = engine.vm_status(host=host, vm_uuid=f"ha-host_VM{MANY - 1}", ref=f"ha-host_VM{MANY - 1}")
    assert last.status == "running" and conn.round_trips - before == 1


def test_simulator_killed_mid_test_host_offline_nothing_lost(esxi_workdir: Path) -> None:
    sim = testing.start("esx", esxi_workdir / "killed")
    server = LiveServer(esxi_workdir / "killed-server", host_timeout=3.0).start()
    api = server.admin()
    try:
        testing.make_template(sim)
        api.post("/api/server/create", {"server_name": "esxi-k", "server_type": "vSphereESXi",
                                        "server_addr": sim.addr, "server_user": sim.user, "server_pass": sim.password,
                                        "options": {"verify_tls": False, "timeout": 3}})
        api.run_task("POST", "/api/client/create/esxi-k", {"vm_uuid": "esxi-k-vm", "os_name": testing.TEMPLATE,
                                                            "cpu_num": 1, "ram_num": 128, "hdd_num": 2})
        api.run_task("POST", "/api/client/backup/create/esxi-k/esxi-k-vm", {"description": "before the crash"})
        before = api.get("/api/client/detail/esxi-k/esxi-k-vm")
        assert before["status"] == "running"

        os.kill(sim.pid, signal.SIGKILL)  # the host dies without a word
        sim.process.wait(10)
        time.sleep(2.5)  # past the host list's status cache
        started = time.monotonic()
        hosts = api.get("/api/server/detail")
        assert time.monotonic() - started < 8
        mine = next(h for h in hosts if h["server_name"] == "esxi-k")
        assert mine["status"] == "offline" and mine["error"], mine
        assert api.get("/api/server/status/esxi-k")["status"] == "offline"

        # every record is still there: the VM, its spec, its backup
        after = api.get("/api/client/detail/esxi-k/esxi-k-vm")
        for key in ("vm_uuid", "os_name", "cpu_num", "ram_num", "hdd_num", "owner_id"):
            assert after[key] == before[key], key
        assert [v["vm_uuid"] for v in api.get("/api/client/detail/esxi-k")] == ["esxi-k-vm"]
        assert [b["description"] for b in api.get("/api/client/backup/detail/esxi-k/esxi-k-vm")] == \
            ["before the crash"]
        status, body = api.call("POST", "/api/client/powers/esxi-k/esxi-k-vm", {"action": "H_CLOSE"})
        assert body["code"] == 1003 and status == 503, body  # a clear "unreachable", nothing changed
        assert api.get("/api/client/detail/esxi-k/esxi-k-vm")["status"] == before["status"]
    finally:
        api.call("DELETE", "/api/server/delete/esxi-k", params={"force": "true"})
        api.close()
        server.stop()
        sim.stop()
