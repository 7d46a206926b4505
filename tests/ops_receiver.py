"""A webhook receiver the tests start: records every request, answers 500 when told to."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    @property
    def document(self) -> dict[str, Any]:
        return dict(orjson.loads(self.body))


class Receiver:
    """``Receiver().start()`` → ``url``; ``fail_first[event_name] = n`` answers 500 to its first n tries."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[Received] = []
        self.fail_first: dict[str, int] = {}
        self._tries: dict[str, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver._answer(headers)
                with receiver.lock:
                    receiver.received.append(Received(headers, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def _answer(self, headers: dict[str, str]) -> int:
        with self.lock:
            event_id = headers.get("x-idcs-event-id", "")
            self._tries[event_id] = self._tries.get(event_id, 0) + 1
            return 500 if self._tries[event_id] <= self.fail_first.get(headers.get("x-idcs-event", ""), 0) else 200

    def start(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True, name="webhook-receiver").start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, where: Callable[[Received], bool], count: int = 1, timeout: float = 15) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = [r for r in self.received if where(r)]
            if len(found) >= count or time.monotonic() > deadline:
                if len(found) < count:
                    raise AssertionError(f"{len(found)} of {count} requests arrived; got "
                                         f"{[r.headers.get('x-idcs-event') for r in self.received]}")
                return found
            time.sleep(0.05)
