"""Polling the host list while a host hangs costs one stuck worker thread for that host, not one
per poll: otherwise the pool fills up and live hosts time out behind the dead one."""

from __future__ import annotations

import time

from testlab import PASSWORD, TestLabEngine

from idcs_core.services.hosts import STATUS_TTL
from idcs_core.testing.server import ApiClient


def test_a_hanging_host_is_asked_once_while_it_hangs(admin: ApiClient, lab: TestLabEngine) -> None:
    for name in ("hang1", "live1"):
        admin.post("/api/server/create", {"server_name": name, "server_type": "TestLab",
                                          "server_addr": f"lab://{name}", "server_user": "root",
                                          "server_pass": PASSWORD})
    try:
        lab.faults.hang.add("lab://hang1")
        time.sleep(STATUS_TTL)
        for _ in range(3):
            started = time.monotonic()
            hosts = {h["server_name"]: h for h in admin.get("/api/server/detail")}
            assert time.monotonic() - started < 2.0 + 1.5, "the list waited past the host timeout"
            assert hosts["hang1"]["status"] == "offline" and hosts["live1"]["status"] == "online", hosts
            time.sleep(STATUS_TTL)  # the short status cache expires: the list asks again
        assert lab.faults.hung_calls == 1, f"{lab.faults.hung_calls} calls stuck on the hanging host"
        assert "previous status call" in admin.get("/api/server/detail/hang1")["error"]

        lab.faults.unhang.set()  # the host answers again: the next poll asks it and sees it online
        time.sleep(STATUS_TTL + 0.2)
        assert admin.get("/api/server/detail/hang1")["status"] == "online"
    finally:
        lab.faults.reset()
        for name in ("hang1", "live1"):
            admin.call("DELETE", f"/api/server/delete/{name}", params={"force": "true"})
