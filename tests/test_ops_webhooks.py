"""Webhooks: a receiver started here gets each event once, signed; failed tries are retried."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from ops_receiver import Received, Receiver
from sqlalchemy import update
from testlab import PASSWORD

from idcs_core.db.models import WebhookDelivery, utcnow
from idcs_core.ops.webhooks import prune_deliveries
from idcs_core.plugins import PluginRegistry
from idcs_core.testing.server import ADMIN_PASSWORD, ApiClient, LiveServer, free_port


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def signature_ok(secret: str, r: Received) -> bool:
    """The receiver's check, written from the documentation (not with the server's code)."""
    ts = r.headers["x-idcs-timestamp"]
    if abs(time.time() - int(ts)) > 300:
        return False
    expected = "v1=" + hmac.new(secret.encode(), ts.encode() + b"." + r.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, r.headers["x-idcs-signature"])


def test_each_event_once_signed_and_retried(server: LiveServer, receiver: Receiver) -> None:
    admin: ApiClient = server.admin()
    admin.post("/api/system/settings", {"webhook_backoff_seconds": 0.2, "webhook_max_attempts": 4})
    hook = admin.post("/api/webhooks", {"url": receiver.url, "description": "billing"})
    secret = hook["secret"]
    assert secret.startswith("whsec_") and len(secret) > 30
    listed = admin.get("/api/webhooks")
    assert [h["id"] for h in listed] == [hook["id"]] and secret not in str(listed), "the secret is shown once"

    receiver.fail_first["vm_powered"] = 2  # the receiver answers 500 to the first two tries
    admin.post("/api/server/create", {"server_name": "whhost", "server_type": "TestLab", "server_addr": "lab://wh",
                                      "server_user": "root", "server_pass": PASSWORD})
    admin.run_task("POST", "/api/client/create/whhost", {"vm_uuid": "wh1", "os_name": "busybox", "cpu_num": 1,
                                                         "ram_num": 64, "hdd_num": 1, "os_pass": "Root-Secret-99"})
    admin.post("/api/client/powers/whhost/wh1", {"action": "H_CLOSE"})

    def event(name: str) -> object:
        return lambda r: r.headers["x-idcs-event"] == name

    def create_finished(r: Received) -> bool:  # the power action is a task too: it ends with its own event
        return bool(event("task_finished")(r)) and r.document["data"]["task"]["kind"] == "vm_create"

    for name, where in (("host_changed", event("host_changed")), ("vm_created", event("vm_created")),
                        ("task_finished", create_finished)):
        (got,) = receiver.wait_for(where)
        assert signature_ok(secret, got), f"{name}: bad signature"
        doc = got.document
        assert doc["event"] == name and doc["id"] == got.headers["x-idcs-event-id"]
        assert got.headers["x-idcs-attempt"] == "1"
    assert receiver.wait_for(event("vm_created"))[0].document["data"]["vm"]["vm_uuid"] == "wh1"
    assert receiver.wait_for(create_finished)[0].document["data"]["task"]["state"] == "success"

    # vm_powered: 500, 500, then the third try arrives, with the same event id and a fresh valid signature
    tries = receiver.wait_for(event("vm_powered"), count=3)
    assert [r.status for r in tries] == [500, 500, 200]
    assert [r.headers["x-idcs-attempt"] for r in tries] == ["1", "2", "3"]
    assert len({r.headers["x-idcs-event-id"] for r in tries}) == 1
    assert all(signature_ok(secret, r) for r in tries)
    assert tries[2].document["data"]["action"] == "H_CLOSE"
    assert not signature_ok("whsec_wrong", tries[2])
    forged = Received(tries[2].headers, tries[2].body.replace(b"H_CLOSE", b"S_START"), 200)
    assert not signature_ok(secret, forged), "a changed body must not verify"

    # each event arrived once (answered 2xx once; no duplicates), and nothing carried a secret
    time.sleep(1.0)  # a late duplicate would arrive within the back-off
    accepted = [r.headers["x-idcs-event-id"] for r in receiver.received if r.status == 200]
    assert len(accepted) == len(set(accepted))
    everything = b"".join(r.body for r in receiver.received)
    for secret_text in (PASSWORD, "Root-Secret-99", ADMIN_PASSWORD, secret):
        assert secret_text.encode() not in everything

    log = admin.get(f"/api/webhooks/{hook['id']}/deliveries")
    powered = next(d for d in log if d["event"] == "vm_powered")
    assert powered["state"] == "success" and powered["attempts"] == 3 and powered["last_status"] == 200
    assert {d["state"] for d in log} == {"success"}
    assert len(log) == len({d["event_id"] for d in log})

    admin.run_task("DELETE", "/api/client/delete/whhost/wh1")
    admin.delete("/api/server/delete/whhost")
    admin.delete(f"/api/webhooks/{hook['id']}")
    assert admin.get("/api/webhooks") == []
    admin.close()


def test_a_receiver_that_never_answers_2xx_ends_failed(server: LiveServer, receiver: Receiver) -> None:
    admin = server.admin()
    admin.post("/api/system/settings", {"webhook_backoff_seconds": 0.1, "webhook_max_attempts": 2})
    hook = admin.post("/api/webhooks", {"url": receiver.url, "events": ["host_changed"]})
    receiver.fail_first["host_changed"] = 99
    admin.post("/api/server/create", {"server_name": "whdown", "server_type": "TestLab", "server_addr": "lab://whd",
                                      "server_user": "root", "server_pass": PASSWORD})
    receiver.wait_for(lambda r: True, count=2)
    deadline = time.monotonic() + 10
    while (log := admin.get(f"/api/webhooks/{hook['id']}/deliveries"))[0]["state"] == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert log[0]["state"] == "failed" and log[0]["attempts"] == 2 and log[0]["last_status"] == 500
    assert len(receiver.received) == 2, "max attempts is 2"
    assert {r.headers["x-idcs-event"] for r in receiver.received} == {"host_changed"}, "only subscribed events"
    admin.delete("/api/server/delete/whdown")
    admin.delete(f"/api/webhooks/{hook['id']}")
    admin.close()


@pytest.mark.parametrize("body", [{"url": "ftp://example.com/x"}, {"url": "http://user:pw@example.com/x"},
                                  {"url": "not a url"}, {"url": "http://example.com", "events": ["nope"]}, {}])
def test_bad_webhooks_are_refused(server: LiveServer, body: dict[str, object]) -> None:
    admin = server.admin()
    status, answer = admin.call("POST", "/api/webhooks", body)
    assert status == 400 and answer["code"] == 400, answer
    assert admin.get("/api/webhooks") == []
    bad_id, _ = admin.call("GET", "/api/webhooks/abc/deliveries")
    assert bad_id == 400
    missing, _ = admin.call("DELETE", "/api/webhooks/999999")
    assert missing == 404
    admin.close()


def test_pending_deliveries_survive_a_restart(registry: PluginRegistry, tmp_path: Path) -> None:
    """A delivery still being retried when the server stops is sent after it starts again."""
    srv = LiveServer(tmp_path / "restart", plugins=registry, host_timeout=2.0).start()
    port = free_port()  # nothing listens there yet: the first tries are refused
    url = f"http://127.0.0.1:{port}/hook"
    receiver: Receiver | None = None
    try:
        admin = srv.admin()
        admin.post("/api/system/settings", {"webhook_backoff_seconds": 1.0, "webhook_max_attempts": 5})
        hook = admin.post("/api/webhooks", {"url": url, "events": ["host_changed"]})
        admin.post("/api/server/create", {"server_name": "whre", "server_type": "TestLab",
                                          "server_addr": "lab://whre", "server_user": "root",
                                          "server_pass": PASSWORD})
        deadline = time.monotonic() + 10
        # the delivery is recorded by the event plugin, after the create answered: wait for its first try
        while not (log := admin.get(f"/api/webhooks/{hook['id']}/deliveries")) or log[0]["attempts"] < 1:
            assert time.monotonic() < deadline, log
            time.sleep(0.05)
        assert log[0]["state"] == "pending" and log[0]["last_status"] is None and log[0]["last_error"]
        admin.close()
        srv.stop()
        receiver = Receiver(port).start()
        srv.start()
        (got,) = receiver.wait_for(lambda r: r.headers["x-idcs-event"] == "host_changed")
        assert signature_ok(hook["secret"], got) and int(got.headers["x-idcs-attempt"]) >= 2
        admin = srv.admin()
        (done,) = admin.get(f"/api/webhooks/{hook['id']}/deliveries")
        assert done["state"] == "success" and done["event_id"] == got.headers["x-idcs-event-id"]
        admin.delete("/api/server/delete/whre")
        admin.close()
    finally:
        srv.stop()
        if receiver is not None:
            receiver.stop()


def test_old_deliveries_leave_the_log(server: LiveServer, receiver: Receiver) -> None:
    """Finished deliveries older than audit_keep_days are pruned; pending ones never are."""
    admin = server.admin()
    hook = admin.post("/api/webhooks", {"url": receiver.url, "events": ["host_changed"]})
    admin.post("/api/server/create", {"server_name": "whold", "server_type": "TestLab", "server_addr": "lab://who",
                                      "server_user": "root", "server_pass": PASSWORD})
    receiver.wait_for(lambda r: True)
    deadline = time.monotonic() + 10
    while admin.get(f"/api/webhooks/{hook['id']}/deliveries")[0]["state"] != "success":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    core = server._server.config.app.state.core  # type: ignore[union-attr]

    async def age_and_prune(days: int) -> int:
        async with core.db.session() as s:
            await s.execute(update(WebhookDelivery).values(updated_at=utcnow() - timedelta(days=days)))
        return await prune_deliveries(core)

    def run(days: int) -> int:
        return asyncio.run_coroutine_threadsafe(age_and_prune(days), core.ops.webhooks.loop).result(30)

    assert run(10) == 0 and len(admin.get(f"/api/webhooks/{hook['id']}/deliveries")) == 1  # kept 90 days
    assert run(91) >= 1 and admin.get(f"/api/webhooks/{hook['id']}/deliveries") == []
    admin.delete("/api/server/delete/whold")
    admin.delete(f"/api/webhooks/{hook['id']}")
    admin.close()
