"""The accounting rules of ``ops.traffic`` on their own, then through a server with the example
engine (its fake back end counts what its forwards carry): first samples, restarts, counters that
go down, a throttle for passing ``flu_num`` heard once, and a new month that lifts it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from idcs_example import fakecloud
from idcs_example.engine import ExampleEngine
from sqlalchemy import update

from idcs_core.db.models import VMTraffic
from idcs_core.ops.traffic import GIB, counted, delta, limit_bytes, month_start
from idcs_core.plugins import PluginRegistry
from idcs_core.testing.server import LiveServer
from idcs_core.types import TrafficCounters

ADDR = "fake://ops18-traffic"


def sampled(epoch: str, rx: int, tx: int) -> VMTraffic:
    return VMTraffic(vm_id=1, epoch=epoch, rx_last=rx, tx_last=tx, sampled_at=datetime(2026, 12, 1))


@pytest.mark.parametrize(("row", "now", "expected"), [
    (None, TrafficCounters(500, 700, "a"), (500, 700, True)),  # first sample: counted whole
    (sampled("a", 500, 700), TrafficCounters(800, 900, "a"), (300, 200, False)),  # the difference
    (sampled("a", 500, 700), TrafficCounters(500, 700, "a"), (0, 0, False)),  # nothing moved: nothing added
    (sampled("a", 500, 700), TrafficCounters(40, 50, "b"), (40, 50, True)),  # a restart: the new counters whole
    (sampled("a", 500, 700), TrafficCounters(900, 900, "b"), (900, 900, True)),  # restart beyond the old values
    (sampled("", 500, 700), TrafficCounters(10, 800, ""), (10, 800, True)),  # no epoch: a counter went down
])
def test_delta_never_negative_never_twice(row: VMTraffic | None, now: TrafficCounters,
                                          expected: tuple[int, int, bool]) -> None:
    assert delta(row, now) == expected


def test_counting_and_limits() -> None:
    assert (counted(3, 5, "both"), counted(3, 5, "out"), counted(3, 5, "in")) == (8, 5, 3)
    assert limit_bytes({"flu_num": 2}) == 2 * GIB
    assert limit_bytes({"flu_num": 0}) is None and limit_bytes({}) is None and limit_bytes({"flu_num": "x"}) is None
    assert month_start(datetime(2026, 12, 17, 5, 6, 7)) == datetime(2026, 12, 1)


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    reg = PluginRegistry()
    assert reg.register_engine("ExampleLab", ExampleEngine()) is not None, reg.failures
    fakecloud.start(ADDR, user="admin", password="pw")
    srv = LiveServer(Path(tmp_path_factory.mktemp("traffic-rules")), plugins=reg).start()
    yield srv
    srv.stop()
    fakecloud.stop(ADDR)


def in_server(srv: LiveServer, coro_fn: Any) -> Any:
    core = srv._server.config.app.state.core  # type: ignore[union-attr]
    return asyncio.run_coroutine_threadsafe(coro_fn(core), core.ops.webhooks.loop).result(30)


def test_throttle_heard_once_and_lifted_by_a_new_month(lab_server: LiveServer) -> None:
    admin = lab_server.admin()
    cloud = fakecloud.start(ADDR, user="admin", password="pw")
    admin.post("/api/server/create", {"server_name": "trl", "server_type": "ExampleLab", "server_addr": ADDR,
                                      "server_user": "admin", "server_pass": "pw"})
    admin.run_task("POST", "/api/client/create/trl", {"vm_uuid": "t1", "os_name": "fakeos-1.0", "cpu_num": 1,
                                                     "ram_num": 64, "hdd_num": 1, "flu_num": 1, "speed_u": 50})
    assert cloud.vm("t1").caps == (50, 0), "speed_u applied at create"
    rule = admin.post("/api/client/natadd/trl/t1", {"host_port": 0, "vm_port": fakecloud.HTTP_PORT, "protocol": "tcp"})
    for _ in range(3):
        assert httpx.get(f"http://127.0.0.1:{rule['host_port']}/", timeout=10).status_code == 200
    admin.post("/api/system/settings", {"traffic_over_action": "throttle", "traffic_throttle_mbit": 2})
    hook = admin.post("/api/webhooks", {"url": "http://127.0.0.1:9/x", "events": ["vm_traffic_over"]})
    try:
        assert admin.post("/api/traffic/sample", {})["vms"] == 1
        first = admin.get("/api/client/traffic/trl/t1")
        vm = cloud.vm("t1")
        assert (first["rx_bytes"], first["tx_bytes"]) == (vm.rx_bytes, vm.tx_bytes) and vm.tx_bytes > 0
        assert admin.post("/api/traffic/sample", {})["vms"] == 1
        assert admin.get("/api/client/traffic/trl/t1")["used_bytes"] == first["used_bytes"], "counted twice"

        with cloud.lock:  # the fake host's counters: the VM moved a GiB more
            vm.tx_bytes += GIB
        admin.post("/api/traffic/sample", {})
        over = admin.get("/api/client/traffic/trl/t1")
        assert over["over_action"] == "throttle" and over["used_bytes"] > over["limit_bytes"] == GIB
        assert vm.caps == (2, 2), "throttled to traffic_throttle_mbit"
        admin.post("/api/traffic/sample", {})
        assert len(admin.get(f"/api/webhooks/{hook['id']}/deliveries")) == 1, "the event once per period"

        admin.post("/api/client/powers/trl/t1", {"action": "S_RESET"})  # the counters start again
        assert vm.caps == (2, 2), "the throttle stays across a restart"
        with cloud.lock:
            vm.tx_bytes += 1000
        admin.post("/api/traffic/sample", {})
        assert admin.get("/api/client/traffic/trl/t1")["tx_bytes"] == over["tx_bytes"] + 1000

        async def last_month(core: Any) -> None:
            earlier = month_start(datetime.now(UTC).replace(tzinfo=None)) - timedelta(days=3)
            async with core.db.session() as s:
                await s.execute(update(VMTraffic).values(period_start=earlier))

        in_server(lab_server, last_month)
        admin.post("/api/traffic/sample", {})
        fresh = admin.get("/api/client/traffic/trl/t1")
        assert fresh["over_action"] == "" and fresh["used_bytes"] == 0
        assert vm.caps == (50, 0), "a new month lifts the throttle back to the VM's own caps"
        assert sum(d["total_bytes"] for d in fresh["days"]) > GIB, "daily totals stay"
    finally:
        admin.post("/api/system/settings", {"traffic_over_action": "none", "traffic_throttle_mbit": 1})
        admin.delete(f"/api/webhooks/{hook['id']}")
    admin.run_task("DELETE", "/api/client/delete/trl/t1")
    admin.delete("/api/server/delete/trl")
    admin.close()
