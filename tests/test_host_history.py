"""``GET /api/server/history/<hs>``: the hosts' status history the panel's dashboard charts."""

from __future__ import annotations

import time
from collections.abc import Callable

from testlab import TestLabEngine

from idcs_core.testing.server import ApiClient


def _wait_samples(admin: ApiClient, host: str, done: Callable[[list[dict]], bool], timeout: float = 25) -> list[dict]:
    """Read the history (which asks no host) until ``done`` holds for it."""
    deadline = time.monotonic() + timeout
    while True:
        samples = list(admin.get(f"/api/server/history/{host}", params={"limit": 10}))
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def test_samples_are_taken_without_anyone_looking_and_show_offline_hosts(admin: ApiClient, host: str,
                                                                          lab: TestLabEngine) -> None:
    admin.post("/api/system/settings", {"usage_sample_seconds": 5})
    try:
        samples = _wait_samples(admin, host, lambda s: len(s) >= 1)
        first = samples[0]
        assert first["status"] == "online" and isinstance(first["cpu_usage"], float), first
        assert abs(first["timestamp"] - time.time()) < 30
        lab.faults.down.add(f"lab://{host}")  # the host goes away: a later sample says so, unasked
        samples = _wait_samples(admin, host, lambda s: s[-1]["status"] == "offline")
        assert samples[-1]["status"] == "offline" and samples[-1]["cpu_usage"] is None, samples
        assert len(samples) >= 2
        assert [s["timestamp"] for s in samples] == sorted(s["timestamp"] for s in samples)
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
