"""idcs_core.testing.backends: the helpers engine test suites share, on real processes and sockets."""

from __future__ import annotations

import sys
import threading
import time
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from idcs_core.testing.backends import free_port, http_get, log_tail, start_process, stop_pid


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 404 if self.path == "/missing" else 200
        body = f"hello {self.path}".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_http_get_waits_for_a_late_server_and_raises_an_error_status_at_once() -> None:
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Hello)
    starter = threading.Timer(0.5, server.serve_forever)
    starter.start()
    try:
        assert http_get(port, path="/x", timeout=10) == "hello /x"
        started = time.monotonic()
        with pytest.raises(urllib.error.HTTPError):
            http_get(port, path="/missing", timeout=10)
        assert time.monotonic() - started < 2, "an HTTP error status was retried"
    finally:
        server.shutdown()
        server.server_close()
        starter.join()
    with pytest.raises(OSError):
        http_get(free_port(), timeout=0.3)


def test_a_daemon_started_in_the_background_is_stopped_by_its_pid(tmp_path: Path) -> None:
    log = tmp_path / "d.log"
    script = "import signal, sys, time; print('ready', flush=True); signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
             "time.sleep(60)"
    proc = start_process([sys.executable, "-c", script], log)
    deadline = time.monotonic() + 10
    while "ready" not in log_tail(log) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log_tail(log) == "ready"
    started = time.monotonic()
    stop_pid(proc.pid, timeout=0.5, proc=proc)  # it ignores SIGTERM: SIGKILL after the timeout
    assert proc.poll() is not None and time.monotonic() - started < 5
    stop_pid(proc.pid, proc=proc)  # a process already gone is fine
    assert log_tail(tmp_path / "none.log").startswith("(no log at")
