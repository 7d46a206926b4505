"""Console and terminal links: one-time tickets bound to the VM's row, its owner and the
session that asked (issue 10, High), bounded terminal sizes and clean answers to malformed
control frames, links never built from the Host header, and the pages' headers."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import httpx
import pytest
from consolelab import ConsoleLabEngine
from helpers import create_vm
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from idcs_core.plugins import PluginRegistry
from idcs_core.testing.kit_support import console_link
from idcs_core.testing.server import ApiClient, LiveServer

_names = itertools.count(1)


@pytest.fixture(scope="module")
def lab() -> ConsoleLabEngine:
    return ConsoleLabEngine()


@pytest.fixture(scope="module")
def registry(lab: ConsoleLabEngine) -> PluginRegistry:
    reg = PluginRegistry()
    assert reg.register_engine("TestLab", lab) is not None, reg.failures
    return reg


def _user(admin: ApiClient, server: LiveServer) -> tuple[int, ApiClient, str]:
    name = f"cuser{next(_names)}"
    uid = admin.post("/api/users", {"username": name, "password": "pw-" + name, "email": f"{name}@example.com"})["id"]
    client = server.client()
    client.login(name, "pw-" + name)
    return uid, client, name


@pytest.fixture
def users(admin: ApiClient, server: LiveServer) -> Iterator[list[tuple[int, ApiClient, str]]]:
    made: list[tuple[int, ApiClient, str]] = []
    yield made
    for uid, client, _ in made:
        client.close()
        admin.call("DELETE", f"/api/users/{uid}")


def _links(client: ApiClient, host: str, vm: str) -> dict[str, str]:
    return client.get(f"/api/client/remote/{host}/{vm}")


def _open(client: ApiClient, url: str, query: str = "?cols=80&rows=24") -> ClientConnection:
    _page, ws_url, protocols = console_link(url, client.base_url)
    return connect(ws_url + query, open_timeout=10, close_timeout=2, subprotocols=protocols)  # type: ignore[arg-type]


def _first(ws: ClientConnection) -> str:
    frame = ws.recv(timeout=10)
    return frame.decode() if isinstance(frame, bytes) else frame


def _refused(client: ApiClient, url: str, query: str = "?cols=80&rows=24") -> tuple[int, str]:
    """Open ``url``'s websocket and expect the server to close it at once: (code, reason)."""
    with _open(client, url, query) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_a_link_opens_its_vm_once_and_carries_its_ticket_in_the_fragment(admin: ApiClient, server: LiveServer,
                                                                         host: str, users: list) -> None:
    uid, alice, _ = _user(admin, server)
    users.append((uid, alice, ""))
    create_vm(admin, host, "once1", owner_id=uid)
    links = _links(alice, host, "once1")
    for key, page in (("terminal_url", "/console/terminal#"), ("console_url", "/console/vnc#")):
        url = links[key]
        assert url.startswith(page) and "?" not in url and len(url.split("#", 1)[1]) >= 40, url
    with _open(alice, links["terminal_url"]) as ws:
        assert _first(ws) == "hello from once1 80x24\r\n"
        ws.send(b"ls\r")
        assert _first(ws) == "echo:ls\r"
    assert _refused(alice, links["terminal_url"])[0] == 4403  # used once: gone
    # a console (VNC) ticket does not open a terminal, and is consumed by trying
    vnc_as_terminal = links["console_url"].replace("/console/vnc#", "/console/terminal#")
    assert _refused(alice, vnc_as_terminal)[0] == 4403
    assert _refused(alice, "/console/terminal#not-a-ticket")[0] == 4403
    assert _refused(alice, "/console/terminal")[0] == 4403


def test_the_old_link_fails_after_vm_delete_and_same_name_recreate(admin: ApiClient, server: LiveServer, host: str,
                                                                  users: list) -> None:
    a_id, alice, _ = _user(admin, server)
    b_id, bob, _ = _user(admin, server)
    users += [(a_id, alice, ""), (b_id, bob, "")]
    create_vm(admin, host, "same1", owner_id=a_id)
    old = _links(alice, host, "same1")
    admin.run_task("DELETE", f"/api/client/delete/{host}/same1")
    create_vm(admin, host, "same1", owner_id=b_id)
    assert _refused(alice, old["terminal_url"])[0] == 4403
    assert _refused(alice, old["console_url"])[0] == 4403
    with _open(bob, _links(bob, host, "same1")["terminal_url"]) as ws:  # Bob's own link works
        assert _first(ws).startswith("hello from same1")
    admin.run_task("DELETE", f"/api/client/delete/{host}/same1")


def test_the_link_dies_with_logout_password_change_and_owner_delete(admin: ApiClient, server: LiveServer,
                                                                    host: str, users: list) -> None:
    uid, alice, name = _user(admin, server)
    users.append((uid, alice, name))
    create_vm(admin, host, "bound1", owner_id=uid)
    # logout
    link = _links(alice, host, "bound1")["terminal_url"]
    alice.post("/logout")
    assert _refused(alice, link)[0] == 4403
    # password change in another session of the same user
    alice.login(name, "pw-" + name)
    link = _links(alice, host, "bound1")["terminal_url"]
    other = ApiClient(admin.base_url)
    other.login(name, "pw-" + name)
    other.post("/api/users/change-password", {"old_password": "pw-" + name, "new_password": "pw2-" + name})
    assert _refused(alice, link)[0] == 4403
    # the owner's account deleted (the VM stays, without owner): the admin's link is dead too
    other.login(name, "pw2-" + name)
    link = _links(other, host, "bound1")["terminal_url"]
    admin_link = _links(admin, host, "bound1")["terminal_url"]
    admin.call("DELETE", f"/api/users/{uid}")
    users.clear()
    assert _refused(other, link)[0] == 4403
    assert _refused(admin, admin_link)[0] == 4403  # issued while Alice owned it
    with _open(admin, _links(admin, host, "bound1")["terminal_url"]) as ws:
        assert _first(ws).startswith("hello from bound1")
    other.close()
    admin.run_task("DELETE", f"/api/client/delete/{host}/bound1")


def test_terminal_size_is_bounded_and_malformed_frames_answer_cleanly(admin: ApiClient, host: str) -> None:
    create_vm(admin, host, "frames1")
    for query in ("?cols=80&rows=999999999", "?cols=abc&rows=24", "?cols=%C2%B9&rows=24", "?cols=0&rows=24"):
        code, reason = _refused(admin, _links(admin, host, "frames1")["terminal_url"], query)
        assert code == 4400 and "cols" in reason, (query, code, reason)
    with _open(admin, _links(admin, host, "frames1")["terminal_url"]) as ws:
        assert _first(ws).startswith("hello from frames1")
        for bad in ("[1,2]", "7", '{"type": "resize", "cols": "x", "rows": 5}',
                    '{"type": "resize", "cols": 80, "rows": 999999999}', '{"type": "input", "data": 5}',
                    '{"type": "launch"}'):
            ws.send(bad)
            answer = json.loads(_first(ws))
            assert answer["type"] == "error" and answer["msg"], (bad, answer)
        ws.send('{"type": "resize", "cols": 100, "rows": 30}')
        assert _first(ws) == "[size 100x30]"
        ws.send(b"still here")
        assert _first(ws) == "echo:still here"
    admin.run_task("DELETE", f"/api/client/delete/{host}/frames1")


def test_links_are_never_built_from_the_host_header(admin: ApiClient, host: str) -> None:
    create_vm(admin, host, "hosthdr1")
    resp = httpx.get(f"{admin.base_url}/api/client/remote/{host}/hosthdr1",
                     headers={"Authorization": f"Bearer {admin.token}", "Host": "evil.example.com"})
    data = resp.json()["data"]
    assert "evil" not in json.dumps(data)
    assert data["terminal_url"].startswith("/console/terminal#"), data
    admin.run_task("DELETE", f"/api/client/delete/{host}/hosthdr1")


def test_console_pages_forbid_framing_and_caching(admin: ApiClient) -> None:
    for page in ("/console/terminal", "/console/vnc"):
        resp = httpx.get(admin.base_url + page)
        assert resp.status_code == 200 and "<html" in resp.text
        assert resp.headers["x-frame-options"] == "SAMEORIGIN"
        assert resp.headers["cache-control"] == "no-store"
        csp = resp.headers["content-security-policy"]
        assert "frame-ancestors 'self'" in csp and "script-src 'self'" in csp
        assert "<script>" not in resp.text  # no inline script: the CSP would block it
    for asset in ("/console/static/vendor/xterm/xterm.mjs", "/console/static/vendor/novnc/core/rfb.js",
                  "/console/static/console/terminal.js"):
        resp = httpx.get(admin.base_url + asset)
        assert resp.status_code == 200 and "javascript" in resp.headers["content-type"], asset


def test_an_open_terminal_closes_after_logout_and_vm_delete(admin: ApiClient, server: LiveServer, host: str,
                                                            users: list, monkeypatch: pytest.MonkeyPatch) -> None:
    from idcs_core.api import console

    monkeypatch.setattr(console, "RECHECK_SECONDS", 0.2)  # the server runs in this process (a thread)
    uid, alice, name = _user(admin, server)
    users.append((uid, alice, name))
    create_vm(admin, host, "open1", owner_id=uid)
    with _open(alice, _links(alice, host, "open1")["terminal_url"]) as ws:
        assert _first(ws).startswith("hello from open1")
        alice.post("/logout")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    alice.login(name, "pw-" + name)
    with _open(alice, _links(alice, host, "open1")["terminal_url"]) as ws:
        assert _first(ws).startswith("hello from open1")
        admin.run_task("DELETE", f"/api/client/delete/{host}/open1")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


def test_tickets_never_reach_the_server_log(admin: ApiClient, host: str) -> None:
    """What uvicorn logs of requests (access log) and websockets (``"WebSocket /path" [accepted]``)
    holds the pages' paths but never a ticket: it travels in the fragment and a header."""
    import logging

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Keep(level=logging.DEBUG)
    loggers = [logging.getLogger("uvicorn.access"), logging.getLogger("uvicorn.error")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        create_vm(admin, host, "logged1")
        links = _links(admin, host, "logged1")
        page, _ws, _protocols = console_link(links["terminal_url"], admin.base_url)
        assert httpx.get(page).status_code == 200
        with _open(admin, links["terminal_url"]) as ws:
            assert _first(ws).startswith("hello from logged1")
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
    logged = "\n".join(records)
    assert "/console/terminal" in logged and "/console/terminal/ws" in logged, logged  # the log is on
    for url in links.values():
        assert url.split("#", 1)[1] not in logged
    admin.run_task("DELETE", f"/api/client/delete/{host}/logged1")


def test_a_console_whose_vnc_server_is_gone_closes_with_a_reason(admin: ApiClient, host: str,
                                                                 lab: ConsoleLabEngine) -> None:
    from idcs_core.testing.server import free_port
    from idcs_core.types import ConsoleEndpoint, ConsoleKind

    create_vm(admin, host, "novnc1")
    lab.vnc = ConsoleEndpoint(ConsoleKind.VNC, "127.0.0.1", free_port(), password="x")
    try:
        code, reason = _refused(admin, _links(admin, host, "novnc1")["console_url"], "")
        assert code == 4500 and "does not answer" in reason, (code, reason)
        lab.vnc = ConsoleEndpoint(ConsoleKind.WEBMKS, "127.0.0.1", free_port(), ticket="t")
        code, reason = _refused(admin, _links(admin, host, "novnc1")["console_url"], "")
        assert code == 4500 and "webmks" in reason, (code, reason)
    finally:
        lab.vnc = None
    admin.run_task("DELETE", f"/api/client/delete/{host}/novnc1")


def test_a_link_asked_with_a_named_api_token_dies_with_its_revoke(admin: ApiClient, server: LiveServer,
                                                                  host: str) -> None:
    create_vm(admin, host, "named1")
    made = admin.post("/api/tokens", {"name": f"console-{next(_names)}", "profile": "openidcs"})
    module = ApiClient(admin.base_url, made["token"])
    link = _links(module, host, "named1")["terminal_url"]
    with _open(module, _links(module, host, "named1")["terminal_url"]) as ws:  # a live token's link works
        assert _first(ws).startswith("hello from named1")
    admin.delete(f"/api/tokens/{made['id']}")
    assert _refused(module, link)[0] == 4403  # revoked: the link it asked for is dead too
    module.close()
    admin.run_task("DELETE", f"/api/client/delete/{host}/named1")
