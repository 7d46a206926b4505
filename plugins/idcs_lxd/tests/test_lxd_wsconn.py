"""Opening an exec websocket is bounded: a back end that accepts the connection and never answers
(not the TLS handshake, not the websocket upgrade) gives ``HostUnreachable`` after the open timeout,
never a worker thread waiting forever. Real listeners on loopback stand for the silent daemon."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from idcs_lxd import wsconn
from idcs_lxd.testing import make_self_signed

from idcs_core import errors

Opener = Callable[[], object]


class SilentServer:
    """Accepts connections (after a TLS handshake when given a context) and never sends a byte."""

    def __init__(self, listener: socket.socket, tls: ssl.SSLContext | None = None) -> None:
        self.listener, self.tls = listener, tls
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
                self.held.append(self.tls.wrap_socket(conn, server_side=True) if self.tls else conn)
            except OSError:
                if self.listener.fileno() == -1:
                    return

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


def bounded(open_: Opener) -> BaseException:
    """What ``open_`` raised; the test fails if it has not ended within 60 s (the open timeout is 1 s)."""
    caught: list[BaseException] = []

    def run() -> None:
        try:
            open_()
        except BaseException as exc:
            caught.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "opening the websocket hung"
    assert caught, "a silent back end gave a websocket"
    return caught[0]


@pytest.fixture
def tcp() -> Iterator[socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener
    listener.close()


def pinned() -> ssl.SSLContext:
    ctx = wsconn.PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.expected, ctx.check_hostname, ctx.verify_mode = "00" * 32, False, ssl.CERT_NONE
    return ctx


def test_no_tls_handshake_answer(tcp: socket.socket) -> None:
    server = SilentServer(tcp)
    port = tcp.getsockname()[1]
    try:
        exc = bounded(lambda: wsconn.open_websocket(lambda: socket.create_connection(("127.0.0.1", port), timeout=1),
                                                    f"ws://127.0.0.1:{port}/1.0/operations/x/websocket?secret=s",
                                                    pinned(), 1, "the silent host"))
    finally:
        server.close()
    assert isinstance(exc, errors.HostUnreachable) and "silent host" in str(exc), exc
    assert "TLS handshake" in str(exc), exc


def test_no_websocket_upgrade_answer_over_tls(tcp: socket.socket, tmp_path: Path) -> None:
    make_self_signed(tmp_path / "s.crt", tmp_path / "s.key")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(tmp_path / "s.crt"), str(tmp_path / "s.key"))
    server = SilentServer(tcp, tls)
    port = tcp.getsockname()[1]
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    try:
        exc = bounded(lambda: wsconn.open_websocket(lambda: socket.create_connection(("127.0.0.1", port), timeout=1),
                                                    f"ws://127.0.0.1:{port}/1.0/operations/x/websocket?secret=s",
                                                    client, 1, "the silent host"))
    finally:
        server.close()
    assert isinstance(exc, errors.HostUnreachable) and "did not answer" in str(exc), exc
    assert "websocket upgrade" in str(exc), exc


def test_no_websocket_upgrade_answer_on_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "lxd.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    server = SilentServer(listener)
    try:
        exc = bounded(lambda: wsconn.open_websocket(lambda: wsconn._unix_socket(path, 1),
                                                    "ws://localhost/1.0/operations/x/websocket?secret=s", None, 1,
                                                    "the silent socket"))
    finally:
        server.close()
    assert isinstance(exc, errors.HostUnreachable) and "did not answer" in str(exc), exc
