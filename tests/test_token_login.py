"""A billing panel that logs in with the global API token can log out without an error."""

from __future__ import annotations

from idcs_core.testing.server import ApiClient, LiveServer


def test_logout_after_a_token_login(admin: ApiClient, server: LiveServer) -> None:
    api_token = admin.get("/api/token/current")["token"]
    panel = server.client()
    data = panel.ok("POST", "/api/login", {"login_type": "token", "token": api_token})
    assert data["is_admin"] is True
    panel.token = data["token"]
    assert panel.get("/api/system/engine") == admin.get("/api/system/engine")
    status, body = panel.call("GET", "/api/logout")
    assert (status, body["code"]) == (200, 200), body
    # there was no session to end: the shared token keeps working for every other caller
    assert admin.with_token(api_token).get("/api/users/current")["is_admin"] is True
    logs = admin.get("/api/system/logger/detail", params={"limit": 20})
    assert any(e["action"] == "logout" and "nothing to end" in e["detail"] for e in logs)
    panel.close()


def test_logout_of_a_session_still_ends_it(server: LiveServer, admin: ApiClient) -> None:
    me = server.admin()
    assert me.get("/api/users/current")["username"] == "admin"
    me.get("/api/logout")
    status, body = me.call("GET", "/api/users/current")
    assert status == 401 and body["code"] in (401, 3001), body
    me.close()
