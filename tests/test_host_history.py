"""``GET /api/server/history/<hs>``: the hosts' status history the panel's dashboard charts."""

from __future__ import annotations

import time
from collections.abc import Callable

from testlab import TestLabEngine

from idcs_core.testing.server import ApiClient


def _history(admin: ApiClient, host: str) -> list[dict]:
    return list(admin.get(f"/api/server/history/{host}", params={"limit": 10}))


def test_one_sample_per_interval_from_the_status_asked_and_offline_hosts_show(admin: ApiClient, host: str,
                                                                              lab: TestLabEngine) -> None:
    admin.post("/api/system/settings", {"usage_sample_seconds": 5})
    try:
        [first] = _history(admin, host)  # taken when the host was added
        assert first["status"] == "online" and isinstance(first["cpu_usage"], float), first
        assert abs(first["timestamp"] - time.time()) < 30
        for _ in range(3):  # asked again within the interval: no new sample
            admin.get(f"/api/server/status/{host}")
        assert len(_history(admin, host)) == 1
        lab.faults.down.add(f"lab://{host}")  # the host goes away: the next sample says so
        deadline = time.monotonic() + 20
        while len(samples := _history(admin, host)) < 2:
            assert time.monotonic() < deadline, samples
            admin.get(f"/api/server/status/{host}")
            time.sleep(0.5)
        assert samples[-1]["status"] == "offline" and samples[-1]["cpu_usage"] is None, samples
        assert samples[-1]["timestamp"] - samples[0]["timestamp"] >= 4
    finally:
        lab.faults.reset()
        admin.post("/api/system/settings", {"usage_sample_seconds": 60})


def test_history_of_an_unknown_host_is_1001_and_customers_are_refused(
        admin: ApiClient, host: str, user_factory: Callable[[], ApiClient]) -> None:
    status, body = admin.call("GET", "/api/server/history/no-such-host")
    assert status == 404 and body["code"] == 1001, body
    status, body = user_factory().call("GET", f"/api/server/history/{host}")
    assert status == 403, body


def test_a_new_host_gets_its_first_sample_at_once_even_with_a_deleted_hosts_id(admin: ApiClient) -> None:
    """SQLite hands a new host the id of one just deleted: its history must still start at once."""
    body = {"server_type": "TestLab", "server_user": "root", "server_pass": "lab-pass"}
    for name in ("hist-old", "hist-new"):
        admin.post("/api/server/create", body | {"server_name": name, "server_addr": f"lab://{name}"})
        samples = admin.get(f"/api/server/history/{name}")
        assert [s["status"] for s in samples] == ["online"], (name, samples)
        admin.delete(f"/api/server/delete/{name}", params={"force": "true"})
