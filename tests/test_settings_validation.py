"""Settings are checked for type and range before anything is stored."""

from __future__ import annotations

from typing import Any

import pytest

from idcs_core.testing.server import ADMIN_PASSWORD, ApiClient, LiveServer

BAD: list[tuple[dict[str, Any], str]] = [
    ({"token_ttl_seconds": 10**12}, "token_ttl_seconds"),
    ({"token_ttl_seconds": 0}, "token_ttl_seconds"),
    ({"temp_token_ttl_seconds": 10**12}, "temp_token_ttl_seconds"),
    ({"login_lock_seconds": 10**15}, "login_lock_seconds"),
    ({"login_max_failures": 0}, "login_max_failures"),
    ({"login_max_failures": 2.5}, "login_max_failures"),
    ({"host_timeout": 0}, "host_timeout"),
    ({"host_timeout": 10**9}, "host_timeout"),
    ({"usage_sample_seconds": 10**9}, "usage_sample_seconds"),
    ({"audit_keep_days": 0}, "audit_keep_days"),
    ({"audit_keep_days": 10**9}, "audit_keep_days"),
    ({"default_quota": {"max_foo": 1}}, "max_foo"),
    ({"default_quota": {"vms": 1}}, "default_quota"),
    ({"default_quota": {"max_vms": "many"}}, "max_vms"),
    ({"default_quota": {"max_vms": True}}, "max_vms"),
    ({"default_quota": {"max_vms": 10**12}}, "max_vms"),
    ({"default_quota": {"max_vms": -2}}, "max_vms"),
    ({"default_quota": {"max_vms": None}}, "max_vms"),
    ({"default_quota": [1, 2]}, "default_quota"),
    ({"panel_name": "fine", "token_ttl_seconds": 10**12}, "token_ttl_seconds"),  # all or nothing
]


@pytest.mark.parametrize(("body", "named"), BAD, ids=[str(b) for b, _ in BAD])
def test_bad_values_are_refused_and_nothing_is_saved(server: LiveServer, admin: ApiClient, body: dict[str, Any],
                                                     named: str) -> None:
    before = admin.get("/api/system/settings")
    status, answer = admin.call("POST", "/api/system/settings", body)
    assert (status, answer["code"]) == (400, 400) and named in answer["msg"], answer
    assert admin.get("/api/system/settings") == before
    server.client().login("admin", ADMIN_PASSWORD)  # logins still work
    made = admin.post("/api/users", {"username": "set-check", "password": "pw-set-check", "email": "s@example.com"})
    admin.delete(f"/api/users/{made['id']}")


def test_good_values_apply(server: LiveServer, admin: ApiClient) -> None:
    defaults = admin.get("/api/system/settings")["settings"]
    schema = admin.get("/api/system/settings")["schema"]
    assert schema["token_ttl_seconds"]["max"] == 365 * 24 * 3600
    try:
        admin.post("/api/system/settings", {"token_ttl_seconds": "3600", "login_lock_seconds": 365 * 24 * 3600,
                                            "default_quota": {"max_vms": 3, "max_cpu": "-1"}, "host_timeout": 2})
        got = admin.get("/api/system/settings")["settings"]
        assert (got["token_ttl_seconds"], got["default_quota"]) == (3600, {"max_vms": 3, "max_cpu": -1})
        c = server.client()
        c.login("admin", ADMIN_PASSWORD)
        made = admin.post("/api/users", {"username": "set-good", "password": "pw-set-good", "email": "g@example.com"})
        try:
            assert (made["quota"]["max_vms"], made["quota"]["max_cpu"]) == (3, -1)
        finally:
            admin.delete(f"/api/users/{made['id']}")
    finally:
        admin.post("/api/system/settings", {k: defaults[k] for k in (
            "token_ttl_seconds", "login_lock_seconds", "default_quota", "host_timeout")})
