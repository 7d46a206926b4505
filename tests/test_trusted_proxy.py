"""Behind a load balancer: X-Forwarded-For names the client only when the balancer is trusted.

A login lock set for one forwarded client does not lock the others behind the same balancer;
without ``--trusted-proxy`` the header is ignored (nobody chooses the address they are counted
under), so the failures all count against the peer's own address."""

from __future__ import annotations

from pathlib import Path

import httpx

from idcs_core.testing.server import ADMIN_PASSWORD, LiveServer


def _guess(http: httpx.Client, forwarded_for: str, password: str) -> int:
    r = http.post("/login", json={"username": "admin", "password": password},
                  headers={"X-Forwarded-For": forwarded_for})
    return int(r.json()["code"])


def _lock_address(server: LiveServer, http: httpx.Client, forwarded_for: str) -> None:
    server.admin().post("/api/system/settings", {"login_address_max_failures": 3})
    for i in range(3):
        assert _guess(http, forwarded_for, f"wrong-{i}") == 2003


def test_a_trusted_balancer_s_clients_are_counted_one_by_one(tmp_path: Path) -> None:
    with LiveServer(tmp_path, subprocess_mode=True, serve_args=["--trusted-proxy", "127.0.0.1"]) as server:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            _lock_address(server, http, "198.51.100.7")
            assert _guess(http, "198.51.100.7", ADMIN_PASSWORD) == 2004  # that client is locked
            assert _guess(http, "198.51.100.8", ADMIN_PASSWORD) == 200  # its neighbour is not
        entries = server.admin().get("/api/system/logger/detail", params={"limit": 50})
        assert "198.51.100.8" in {e.get("source_ip") for e in entries}


def test_without_trust_the_header_is_ignored(tmp_path: Path) -> None:
    with LiveServer(tmp_path, subprocess_mode=True, serve_args=[]) as server:
        with httpx.Client(base_url=server.url, timeout=30,
                          transport=httpx.HTTPTransport(local_address="127.0.0.21")) as http:
            _lock_address(server, http, "198.51.100.7")
            # another forwarded address changes nothing: the peer itself (127.0.0.21) is locked
            assert _guess(http, "198.51.100.8", ADMIN_PASSWORD) == 2004
