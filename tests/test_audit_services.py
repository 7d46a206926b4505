"""Services audit what a request did (success and failure alike), each action once; routes never do."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

from helpers import create_vm

from idcs_core.testing.server import ApiClient, LiveServer

API = Path(__file__).resolve().parents[1] / "idcs_core" / "api"

Entry = dict[str, object]


def _audit_calls(tree: ast.AST) -> list[str]:
    """The action (second argument) of every ``<x>.audit(...)`` call in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "audit":
            action = node.args[1] if len(node.args) > 1 else None
            found.append(action.value if isinstance(action, ast.Constant) else ast.unparse(node))
    return found


def test_no_route_audits() -> None:
    calls = {path.name: _audit_calls(ast.parse(path.read_text())) for path in sorted(API.glob("*.py"))}
    stray = {name: actions for name, actions in calls.items() if actions}
    assert not stray, f"routes audit (the service that makes the change should): {stray}"


def _log(admin: ApiClient) -> list[Entry]:
    return admin.get("/api/system/logger/detail", params={"limit": 200})


def _new(admin: ApiClient, act: Callable[[], object]) -> list[Entry]:
    """The audit entries ``act`` added, oldest first."""
    last = max((int(str(e["id"])) for e in _log(admin)), default=0)
    act()
    return [e for e in reversed(_log(admin)) if int(str(e["id"])) > last]


def _only(entries: list[Entry], action: str) -> Entry:
    mine = [e for e in entries if e["action"] == action]
    assert len(mine) == 1, entries
    assert mine[0]["username"] == "admin" and mine[0]["source_ip"] == "127.0.0.1", mine[0]
    return mine[0]


def test_users_area(admin: ApiClient) -> None:
    body = {"username": "auditee", "password": "pw-auditee-1", "email": "a@example.com"}
    made: dict[str, int] = {}
    entry = _only(_new(admin, lambda: made.update(admin.post("/api/users", body))), "user.create")
    assert (entry["target"], entry["result"]) == ("auditee", "success")
    uid = made["id"]
    failed = _only(_new(admin, lambda: admin.call("POST", "/api/users", json=body)), "user.create")
    assert failed["result"] == "failed" and "already exists" in str(failed["detail"]) and failed["level"] == "WARNING"
    entry = _only(_new(admin, lambda: admin.put(f"/api/users/{uid}", {"email": "b@example.com", "is_admin": False})),
                  "user.update")
    assert (entry["target"], entry["detail"], entry["result"]) == (str(uid), "email, is_admin", "success")
    entry = _only(_new(admin, lambda: admin.call("DELETE", f"/api/users/{admin.get('/api/users/current')['id']}")),
                  "user.delete")
    assert entry["result"] == "failed" and "your own account" in str(entry["detail"])
    entry = _only(_new(admin, lambda: admin.delete(f"/api/users/{uid}")), "user.delete")
    assert (entry["target"], entry["result"]) == (str(uid), "success")


def test_host_grants_and_plans(admin: ApiClient, host: str) -> None:
    uid = admin.post("/api/users", {"username": "grantee", "password": "pw-grantee-1", "email": ""})["id"]
    try:
        entry = _only(_new(admin, lambda: admin.post(f"/api/users/{uid}/hosts/{host}", {})), "user.grant-host")
        assert (entry["target"], entry["result"]) == (f"{uid}/{host}", "success")
        entry = _only(_new(admin, lambda: admin.call("DELETE", f"/api/users/{uid}/hosts/nohost")), "user.revoke-host")
        assert entry["result"] == "failed"
    finally:
        admin.delete(f"/api/users/{uid}")
    plan = {"plan_name": "S", "plan_config": {"cpu_num": 1, "mem_num": 512, "hdd_num": 10}}
    entry = _only(_new(admin, lambda: admin.post(f"/api/server/plan/{host}", plan)), "host.plans")
    assert (entry["target"], entry["detail"], entry["result"]) == (host, "S", "success")
    entry = _only(_new(admin, lambda: admin.call("DELETE", f"/api/server/plan/{host}/XL")), "host.plan-delete")
    assert entry["result"] == "failed" and "has no plan XL" in str(entry["detail"])


def test_hosts_area(admin: ApiClient, host: str) -> None:
    entry = _only(_new(admin, lambda: admin.put(f"/api/server/update/{host}", {"server_area": "eu"})), "host.update")
    assert (entry["target"], entry["detail"], entry["result"]) == (host, "server_area", "success")
    entry = _only(_new(admin, lambda: admin.post(f"/api/server/powers/{host}", {"enable": False})), "host.disable")
    assert entry["target"] == host
    admin.post(f"/api/server/powers/{host}", {"enable": True})
    entry = _only(_new(admin, lambda: admin.call("PUT", "/api/server/update/nohost", json={"server_area": "x"})),
                  "host.update")
    assert entry["result"] == "failed" and entry["target"] == "nohost"
    entries = _new(admin, lambda: admin.post(f"/api/server/backup/scan/{host}", {}))
    assert _only(entries, "host.scan")["result"] == "success" and not [e for e in entries if e["action"] == "vm.scan"]
    assert _only(_new(admin, lambda: admin.post(f"/api/client/scaner/{host}", {})), "vm.scan")["detail"] == "0 added"


def test_tokens_and_settings(admin: ApiClient) -> None:
    made: dict[str, object] = {}
    body = {"name": "audited", "profile": "swapidc"}
    entry = _only(_new(admin, lambda: made.update(admin.post("/api/tokens", body))), "token.create")
    assert (entry["target"], entry["detail"]) == ("audited", "swapidc") and str(made["token"]) not in str(entry)
    entry = _only(_new(admin, lambda: admin.delete(f"/api/tokens/{made['id']}")), "token.revoke")
    assert (entry["target"], entry["result"]) == ("audited", "success")
    entry = _only(_new(admin, lambda: admin.call("DELETE", "/api/tokens/999999")), "token.revoke")
    assert (entry["target"], entry["result"]) == ("token 999999", "failed")
    old = admin.get("/api/system/settings")["settings"]["audit_keep_days"]
    entry = _only(_new(admin, lambda: admin.post("/api/system/settings", {"audit_keep_days": old})),
                  "settings.update")
    assert (entry["target"], entry["result"]) == ("audit_keep_days", "success")
    entry = _only(_new(admin, lambda: admin.call("POST", "/api/system/settings", json={"audit_keep_days": "many"})),
                  "settings.update")
    assert entry["result"] == "failed"
    entry = _only(_new(admin, lambda: admin.post("/api/system/recalculate-quotas", {})), "quotas.recalculate")
    assert str(entry["target"]).endswith(" users")


def test_vm_areas(admin: ApiClient, host: str) -> None:
    entries = _new(admin, lambda: create_vm(admin, host, "aud-s1"))
    assert [e["result"] for e in entries if e["action"] == "vm.create"] == ["started", "success"]
    entry = _only(_new(admin, lambda: admin.call("PUT", f"/api/client/update/{host}/aud-none", json={"cpu_num": 2})),
                  "vm.update")
    assert (entry["target"], entry["result"]) == (f"{host}/aud-none", "failed")
    entry = _only(_new(admin, lambda: admin.post(f"/api/client/hdd/mount/{host}/aud-s1",
                                                 {"hdd_name": "data", "hdd_size": 1})), "disk.mount")
    assert (entry["detail"], entry["result"]) == ("data", "success")
    entry = _only(_new(admin, lambda: admin.call("POST", f"/api/client/hdd/mount/{host}/aud-none",
                                                 json={"hdd_name": "data", "hdd_size": 1})), "disk.mount")
    assert (entry["target"], entry["result"]) == (f"{host}/aud-none", "failed")
    entry = _only(_new(admin, lambda: admin.post(f"/api/client/hdd/unmount/{host}/aud-s1", {})), "disk.unmount")
    assert entry["detail"] == "data", "the disk the service picked is named"
    entry = _only(_new(admin, lambda: admin.call("DELETE", f"/api/client/backup/delete/{host}/aud-s1",
                                                 params={"backup_name": "nope"})), "backup.delete")
    assert (entry["detail"], entry["result"]) == ("nope: backup nope does not exist for aud-s1", "failed")
    schedule: dict[str, object] = {}
    entry = _only(_new(admin, lambda: schedule.update(admin.post(f"/api/client/backup/schedule/{host}/aud-s1",
                                                                 {"cron": "@daily", "retention": 2}))),
                  "backup.schedule.create")
    assert (entry["target"], entry["detail"]) == (f"{host}/aud-s1", "@daily keep 2")
    entry = _only(_new(admin, lambda: admin.call("DELETE", f"/api/client/backup/schedule/{host}/aud-s1/999999",
                                                 json={})), "backup.schedule.delete")
    assert entry["result"] == "failed" and str(entry["detail"]).startswith("999999: ")
    entries = _new(admin, lambda: admin.run_task("DELETE", f"/api/client/delete/{host}/aud-s1"))
    assert [e["result"] for e in entries if e["action"] == "vm.delete"] == ["started", "success"]


def test_webhooks_and_api_token(admin: ApiClient) -> None:
    made: dict[str, object] = {}
    entry = _only(_new(admin, lambda: made.update(admin.post("/api/webhooks", {"url": "http://127.0.0.1:9/hook",
                                                                               "events": ["vm_created"]}))),
                  "webhook.create")
    assert entry["target"] == f"webhook {made['id']}" and str(made["secret"]) not in str(entry)
    entry = _only(_new(admin, lambda: admin.call("DELETE", "/api/webhooks/999999", json={})), "webhook.delete")
    assert (entry["target"], entry["result"]) == ("webhook 999999", "failed")
    admin.delete(f"/api/webhooks/{made['id']}", json={})
    entry = _only(_new(admin, lambda: admin.post("/api/token/set", {"token": "audited-token-0123456789"})),
                  "token.set")
    assert entry["target"] == "api-token" and "audited-token" not in str(entry)


def test_logout_is_audited_once(admin: ApiClient, server: LiveServer) -> None:
    leaving = server.admin()
    entry = _only(_new(admin, lambda: leaving.post("/logout", {})), "logout")
    assert (entry["target"], entry["detail"], entry["result"]) == ("admin", "", "success")
