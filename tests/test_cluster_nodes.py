"""Two nodes on one PostgreSQL answer alike (issue 19): a login lock, a logout, a password change,
a token revoke, a new host, a console ticket and a live event made through node A are seen
through node B at once, and a webhook is delivered once per cluster.

The nodes are two servers with their own core (database pool, NOTIFY listener, caches, plugin
registry) on one database schema and one data directory (the key files every node shares).
They run in this process so both can use the in-process ConsoleLab engine as their one back
end; ``test_serve_workers.py`` runs real ``idcs serve --workers 2`` processes.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from consolelab import ConsoleLabEngine
from helpers import create_vm
from ops_receiver import Receiver
from test_ops_live_events import SseClient
from testlab import PASSWORD
from websockets.sync.client import connect

from idcs_core.plugins import PluginRegistry
from idcs_core.testing.databases import drop_postgres_schema, fresh_postgres_url
from idcs_core.testing.kit_support import console_link
from idcs_core.testing.server import ApiClient, LiveServer, free_port

_names = itertools.count(1)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, LiveServer]]:
    lab = ConsoleLabEngine()  # the back end both nodes manage
    url = fresh_postgres_url()
    folder = tmp_path_factory.mktemp("cluster")
    started: list[LiveServer] = []
    try:
        for _ in range(2):  # one after the other: the first makes the schema, keys and admin
            registry = PluginRegistry()
            assert registry.register_engine("TestLab", lab) is not None, registry.failures
            started.append(LiveServer(folder, database_url=url, plugins=registry, host_timeout=2.0).start())
        yield started[0], started[1]
    finally:
        for srv in started:
            srv.stop()
        drop_postgres_schema(url)


def _user(a: LiveServer, b: LiveServer) -> tuple[int, str, ApiClient, ApiClient]:
    """A new user, logged in once on each node: (id, name, client of A, client of B)."""
    name = f"node{next(_names)}"
    admin = a.admin()
    uid = admin.post("/api/users", {"username": name, "password": "pw-" + name, "email": f"{name}@example.com"})["id"]
    on_a, on_b = a.client(), b.client()
    on_a.login(name, "pw-" + name)
    on_b.login(name, "pw-" + name)
    return uid, name, on_a, on_b


def _login(srv: LiveServer, name: str, password: str) -> tuple[int, int]:
    r = httpx.post(f"{srv.url}/login", json={"username": name, "password": password}, timeout=30)
    return r.status_code, r.json()["code"]


def test_a_login_lock_set_through_one_node_refuses_on_the_other(nodes: tuple[LiveServer, LiveServer]) -> None:
    a, b = nodes
    admin_a = a.admin()
    _uid, name, _, _ = _user(a, b)
    admin_a.post("/api/system/settings", {"login_max_failures": 3})  # B hears the change at once
    try:
        for _ in range(2):
            assert _login(a, name, "wrong")[1] == 2003
        assert _login(b, name, "wrong")[1] == 2003  # the third failure, counted through B
        assert _login(b, name, "pw-" + name) == (429, 2004)  # locked for this address on both nodes
        assert _login(a, name, "pw-" + name) == (429, 2004)
    finally:
        admin_a.post("/api/system/settings", {"login_max_failures": 5})


def test_logout_password_change_and_revoke_through_one_node_end_tokens_on_the_other(
        nodes: tuple[LiveServer, LiveServer]) -> None:
    a, b = nodes
    uid, name, on_a, on_b = _user(a, b)
    session_b = b.client(on_a.token)  # the token made through A, used through B (remembered there now)
    assert session_b.get("/api/users/current")["username"] == name
    on_a.post("/logout")
    status, body = session_b.call("GET", "/api/users/current")
    assert status == 401, body

    assert on_b.get("/api/users/current")["username"] == name  # remembered by B
    a.admin().put(f"/api/users/{uid}", {"password": "new-pw-" + name})  # an admin changes it through A
    status, body = on_b.call("GET", "/api/users/current")
    assert status == 401, body

    made = a.admin().post("/api/tokens", {"name": f"billing{next(_names)}"})
    billing_b = b.client(made["token"])
    billing_b.get("/api/server/detail", params={"format": "list"})  # works, and is remembered by B
    a.admin().delete(f"/api/tokens/{made['id']}")
    status, body = billing_b.call("GET", "/api/server/detail", params={"format": "list"})
    assert status == 401, body


def test_a_host_added_through_one_node_is_listed_by_the_other_at_once(nodes: tuple[LiveServer, LiveServer]) -> None:
    a, b = nodes
    admin_a, admin_b = a.admin(), b.admin()
    name = f"nodehost{next(_names)}"
    before = {h["server_name"] for h in admin_b.get("/api/server/detail", params={"format": "list"})}  # cached in B
    assert name not in before
    admin_a.post("/api/server/create", {"server_name": name, "server_type": "TestLab", "server_addr": f"lab://{name}",
                                        "server_user": "root", "server_pass": PASSWORD,
                                        "ports_start": 21000, "ports_close": 21010})
    after = {h["server_name"] for h in admin_b.get("/api/server/detail", params={"format": "list"})}
    assert name in after
    admin_b.get(f"/api/server/detail/{name}")  # B asks the host's status too: still one sample this interval
    assert len(admin_b.get(f"/api/server/history/{name}", params={"limit": 10})) == 1
    admin_a.call("DELETE", f"/api/server/delete/{name}", params={"force": "true"})
    assert name not in {h["server_name"] for h in admin_b.get("/api/server/detail", params={"format": "list"})}


def test_a_console_link_made_through_one_node_opens_once_on_the_other(nodes: tuple[LiveServer, LiveServer]) -> None:
    a, b = nodes
    admin_a = a.admin()
    host = f"conhost{next(_names)}"
    admin_a.post("/api/server/create", {"server_name": host, "server_type": "TestLab", "server_addr": f"lab://{host}",
                                        "server_user": "root", "server_pass": PASSWORD,
                                        "ports_start": 21100, "ports_close": 21110})
    try:
        create_vm(admin_a, host, "nodecon1")
        links = admin_a.get(f"/api/client/remote/{host}/nodecon1")
        _page, ws_url, protocols = console_link(links["terminal_url"], b.url)  # opened through B
        with connect(ws_url + "?cols=80&rows=24", open_timeout=10, close_timeout=2,
                     subprotocols=protocols) as ws:  # type: ignore[arg-type]
            first = ws.recv(timeout=10)
            assert (first.decode() if isinstance(first, bytes) else first) == "hello from nodecon1 80x24\r\n"
        _page, ws_url_a, protocols = console_link(links["terminal_url"], a.url)  # used: gone on A too
        with connect(ws_url_a + "?cols=80&rows=24", open_timeout=10, close_timeout=2,
                     subprotocols=protocols) as ws:  # type: ignore[arg-type]
            with pytest.raises(Exception) as closed:
                ws.recv(timeout=10)
        assert getattr(closed.value, "rcvd", None) is not None and closed.value.rcvd.code == 4403  # type: ignore[attr-defined]
    finally:
        admin_a.call("DELETE", f"/api/server/delete/{host}", params={"force": "true"})


def test_an_event_raised_on_one_node_reaches_a_stream_on_the_other(nodes: tuple[LiveServer, LiveServer]) -> None:
    a, b = nodes
    stream = SseClient(b.url, b.admin().token or "")
    try:
        _uid, name, _, _ = _user(a, a)  # both logins through A
        seen = stream.wait_for("user_logged_in", lambda d: d["data"]["user"]["username"] == name)
        assert seen["event"] == "user_logged_in"
    finally:
        stream.stop.set()


def test_a_webhook_hears_each_event_once_whichever_node_raised_it(nodes: tuple[LiveServer, LiveServer],
                                                                  tmp_path: Path) -> None:
    a, b = nodes
    receiver = Receiver().start()
    admin_a = a.admin()
    hook = admin_a.post("/api/webhooks", {"url": receiver.url, "events": ["user_logged_in"]})
    try:
        _uid, name, _, _ = _user(a, b)  # one login through each node
        got = receiver.wait_for(lambda r: r.document["data"]["user"]["username"] == name, count=2)
        ids = {r.headers["x-idcs-event-id"] for r in got}
        assert len(ids) == 2, ids  # two events, each heard by the receiver once
        rows = [d for d in admin_a.get(f"/api/webhooks/{hook['id']}/deliveries") if d["event_id"] in ids]
        assert len(rows) == 2 and all(d["state"] == "success" and d["attempts"] == 1 for d in rows), rows
    finally:
        admin_a.delete(f"/api/webhooks/{hook['id']}")
        receiver.stop()


def test_a_delivery_both_nodes_retry_is_sent_once_per_try(nodes: tuple[LiveServer, LiveServer]) -> None:
    """Node B restarts while a delivery of node A is being retried: both nodes now retry it, and
    each try is still sent by one of them only."""
    a, b = nodes
    admin_a = a.admin()
    port = free_port()  # nothing listens there yet: the first tries fail
    admin_a.post("/api/system/settings", {"webhook_backoff_seconds": 0.5, "webhook_max_attempts": 8})
    hook = admin_a.post("/api/webhooks", {"url": f"http://127.0.0.1:{port}/hook", "events": ["user_logged_in"]})
    receiver: Receiver | None = None
    try:
        _uid, name, _, _ = _user(a, a)
        deadline = time.monotonic() + 30
        while not [d for d in admin_a.get(f"/api/webhooks/{hook['id']}/deliveries") if d["attempts"] >= 1]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        b.stop()
        b.start()  # resumes the pending delivery beside A
        receiver = Receiver(port).start()
        (got,) = receiver.wait_for(lambda r: r.document["data"]["user"]["username"] == name, timeout=60)
        event_id = got.headers["x-idcs-event-id"]

        def delivery() -> dict[str, object]:
            return next(d for d in admin_a.get(f"/api/webhooks/{hook['id']}/deliveries") if d["event_id"] == event_id)

        while (done := delivery())["state"] == "pending":  # the winner records the success
            assert time.monotonic() < deadline + 60, done
            time.sleep(0.05)
        assert done["state"] == "success"
        sent = [r for r in receiver.received if r.headers["x-idcs-event-id"] == event_id]
        assert len(sent) == 1, [r.headers for r in sent]
    finally:
        admin_a.delete(f"/api/webhooks/{hook['id']}")
        admin_a.post("/api/system/settings", {"webhook_backoff_seconds": 10.0, "webhook_max_attempts": 6})
        if receiver is not None:
            receiver.stop()
