"""Named API tokens (secret once, hashed, last use, revoke at once, scopes, expiry), the global
token's profile setting, the CLI, and the NAT port range for token calls."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from idcs_core.config import async_url, sync_url
from idcs_core.testing.server import ApiClient, LiveServer

LAB_VM = {"os_name": "ubuntu-22.04", "cpu_num": 1, "mem_num": 256}


def sql(server: LiveServer, statement: str, **params: object) -> list[tuple]:
    url = sync_url(async_url(server.database_url or f"sqlite:///{server.data_dir / 'idcs.db'}"))
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def test_named_token_life(server: LiveServer, admin: ApiClient, host: str) -> None:
    made = admin.post("/api/tokens", {"name": "zjmf-life", "profile": "idcsmart", "scopes": ["vms"]})
    secret = made["token"]
    assert secret.startswith("idcst_") and made["profile"] == "idcsmart" and made["scopes"] == ["vms"]
    listed = {t["name"]: t for t in admin.get("/api/tokens")}["zjmf-life"]
    assert "token" not in listed and secret not in str(admin.get("/api/tokens"))      # shown once
    assert listed["last_used_at"] is None and listed["prefix"] == secret[:10]
    stored = sql(server, "SELECT secret_hash FROM api_tokens WHERE name = :n", n="zjmf-life")
    assert stored == [(hashlib.sha256(secret.encode()).hexdigest(),)]                # only the hash is kept

    module = server.client(secret)
    status, body = module.call("POST", f"/api/client/create/{host}", LAB_VM | {"vm_uuid": "tk1", "hdd_num": 2048})
    assert body["code"] == 200, body
    assert admin.get(f"/api/client/detail/{host}/tk1")["hdd_num"] == 2                # its profile: MB
    assert module.get(f"/api/client/detail/{host}/tk1")["hdd_num"] == 2048
    assert {t["name"]: t for t in admin.get("/api/tokens")}["zjmf-life"]["last_used_at"] is not None
    status, body = module.call("GET", "/api/server/detail")                           # scope "vms" only
    assert body["code"] == 403 and "scopes" in body["msg"]
    status, body = module.call("GET", "/api/users")
    assert body["code"] == 403

    revoked = admin.delete(f"/api/tokens/{made['id']}")
    assert revoked["revoked"] is True
    status, body = module.call("GET", f"/api/client/detail/{host}/tk1")                 # at once
    assert status == 401 and body["code"] == 3001, body
    admin.run_task("DELETE", f"/api/client/delete/{host}/tk1")


def test_token_validation_and_expiry(server: LiveServer, admin: ApiClient, host: str) -> None:
    for bad in [{"name": "x", "profile": "whmcs"}, {"name": "x", "scopes": ["root"]}, {"name": "../x"},
                {"name": "x", "expires_in_days": 0}]:
        status, body = admin.call("POST", "/api/tokens", bad)
        assert status == 400 and body["code"] == 400, (bad, body)
    assert "x" not in [t["name"] for t in admin.get("/api/tokens")]
    made = admin.post("/api/tokens", {"name": "ro-exp", "profile": "swapidc", "scopes": ["read-only"],
                                      "expires_in_days": 30})
    status, body = admin.call("POST", "/api/tokens", {"name": "ro-exp"})
    assert body["code"] == 4002 or status == 409, body
    reader = server.client(made["token"])
    assert isinstance(reader.get(f"/api/client/detail/{host}"), list)
    status, body = reader.call("POST", f"/api/client/create/{host}", LAB_VM | {"vm_uuid": "ro1", "hdd_num": 1024})
    assert body["code"] == 403, body                                                  # read-only
    sql(server, "UPDATE api_tokens SET expires_at = :t WHERE name = 'ro-exp'", t="2020-01-01 00:00:00")
    deadline = time.monotonic() + 10  # a checked token is re-read after RECHECK_SECONDS (5 s)
    while (body := reader.call("GET", f"/api/client/detail/{host}")[1])["code"] == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert body["code"] == 3002, body                                                 # expired


def test_global_token_profile_setting(server: LiveServer, admin: ApiClient, host: str) -> None:
    token = admin.get("/api/token/current")["token"]
    module = server.client(token)
    module.post(f"/api/client/create/{host}", LAB_VM | {"vm_uuid": "gp1", "hdd_num": 3})
    assert admin.get(f"/api/client/detail/{host}/gp1")["hdd_num"] == 3                # default openidcs: GB
    _, body = admin.call("POST", "/api/system/settings", {"api_token_profile": "nope"})
    assert body["code"] == 400
    admin.post("/api/system/settings", {"api_token_profile": "swapidc"})
    try:
        assert module.get(f"/api/client/detail/{host}/gp1")["hdd_num"] == 3 * 1024      # now MB
        profiles = {p["name"]: p for p in admin.get("/api/tokens/profiles")}
        assert profiles["swapidc"]["hdd_unit"] == "MB" and profiles["openidcs"]["wait_seconds"] == 300
    finally:
        admin.post("/api/system/settings", {"api_token_profile": "openidcs"})
    admin.run_task("DELETE", f"/api/client/delete/{host}/gp1")


def test_token_nat_port_must_lie_in_host_range(server: LiveServer, admin: ApiClient, host: str) -> None:
    """The host fixture's range is 20000-20010: an explicit 30001 from a token is refused unless the
    operator sets the host's option token_any_port; an administrator's session may still use it."""
    module = server.client(admin.post("/api/tokens", {"name": "nat-range", "profile": "openidcs"})["token"])
    module.post(f"/api/client/create/{host}", LAB_VM | {"vm_uuid": "nr1", "hdd_num": 1})
    _, body = module.call("POST", f"/api/client/natadd/{host}/nr1", {"wan_port": 30001, "lan_port": 22})
    assert body["code"] == 400 and "20000-20010" in body["msg"], body
    assert admin.get(f"/api/client/natget/{host}/nr1") == []
    admin.put(f"/api/server/update/{host}", {"options": {"token_any_port": True}})
    assert module.post(f"/api/client/natadd/{host}/nr1", {"wan_port": 30001, "lan_port": 22})["wan_port"] == 30001
    admin.run_task("DELETE", f"/api/client/delete/{host}/nr1")


def test_cli_token_commands(tmp_path: Path) -> None:
    def idcs(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "idcs_core.cli", "token", *args, "--data-dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = idcs("create", "whmcs1", "--profile", "swapidc", "--scope", "vms", "--expires-days", "7")
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("idcst_") and "profile swapidc" in out
    listing = idcs("list")
    assert "whmcs1" in listing and "swapidc" in listing and "active" in listing and secret not in listing
    token_id = listing.split()[0]
    assert "revoked" in idcs("revoke", token_id)
    assert "revoked" in idcs("list")
