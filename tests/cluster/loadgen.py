"""A bounded mixed load for the cluster tests: a fixed list of operations (cheap reads, VM creates,
NAT adds and deletes) run by a few client threads through HAProxy, every answer recorded.

Not timed: the list is fixed, and ``gates`` hold operations back until the chaos steps they wait
for have happened (``Load.run`` returns when every operation has an answer)."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from idcs_core.testing.cluster import REQUEST_ID_HEADER

READ = "read"
CREATE = "create"
NAT_ADD = "nat_add"
NAT_DEL = "nat_del"


@dataclass
class Answer:
    """One request and what came back (``status`` 0 with ``error`` when no HTTP answer came)."""

    op: str
    method: str
    path: str
    request_id: str
    started: float
    ended: float = 0.0
    status: int = 0
    body: dict[str, Any] | None = None  # the JSON envelope, if the answer was one
    text: str = ""
    error: str = ""
    target: dict[str, Any] = field(default_factory=dict)  # what the op was about (vm, port, rule)

    @property
    def code(self) -> int | None:
        return None if self.body is None else self.body.get("code")

    @property
    def accepted(self) -> bool:
        return self.status == 200 and self.code == 200


@dataclass
class Plan:
    """How many operations of each kind; their order is shuffled with ``seed``."""

    reads: int = 120
    creates: int = 16
    nat_adds: int = 16
    nat_dels: int = 8
    seed: int = 19

    def ops(self) -> list[str]:
        ops = [READ] * self.reads + [CREATE] * self.creates + [NAT_ADD] * self.nat_adds + [NAT_DEL] * self.nat_dels
        random.Random(self.seed).shuffle(ops)
        return ops


class Load:
    """Runs ``plan`` with ``threads`` clients of ``url`` as ``token``; VMs named ``prefix<n>``, NAT rules
    on ``nat_vms``, host ports from ``ports``. ``gates``: operation index → an event it waits for."""

    def __init__(self, url: str, token: str, hs: str, image: str, prefix: str, nat_vms: list[str],
                 ports: Callable[[], int], plan: Plan, threads: int = 6,
                 gates: dict[int, threading.Event] | None = None) -> None:
        self.url, self.token, self.hs, self.image, self.prefix = url, token, hs, image, prefix
        self.nat_vms, self.ports, self.threads = nat_vms, ports, threads
        self.ops = plan.ops()
        self.gates = sorted((gates or {}).items())
        self.answers: list[Answer] = []
        self.started = 0  # operations handed to a thread so far
        self.waiting_on_worker = 0  # NAT requests in flight: each waits for its task, run by a worker
        self._lock = threading.Lock()
        self._next = 0
        self._creates = 0
        self._rules: list[tuple[str, int, int]] = []  # accepted NAT adds not yet picked for deletion
        self._rng = random.Random(7)
        self.progress = threading.Condition(self._lock)

    def __len__(self) -> int:
        return len(self.ops)

    def wait_started(self, count: int, or_all_waiting_on_worker: bool = False) -> None:
        """Block until ``count`` operations have been started (or all of them); with
        ``or_all_waiting_on_worker``, also return when every thread waits in a NAT request (whose task
        needs a worker: while none runs, the load cannot go on)."""
        with self.progress:
            self.progress.wait_for(lambda: self.started >= min(count, len(self.ops)) or (
                or_all_waiting_on_worker and self.waiting_on_worker >= self.threads))

    def run(self) -> list[Answer]:
        workers = [threading.Thread(target=self._work, name=f"load-{i}", daemon=True) for i in range(self.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return self.answers

    def _work(self) -> None:
        # one connection per request: when a node dies with a request in flight, HAProxy answers 502
        # (and logs it) on a client connection that carried no earlier request, but closes a reused
        # one without an answer or a log line, so that the client sends it again (its keep-alive race)
        headers = {"Authorization": f"Bearer {self.token}", "Connection": "close"}
        with httpx.Client(base_url=self.url, timeout=300, headers=headers) as http:
            while True:
                with self._lock:
                    if self._next >= len(self.ops):
                        return
                    index, self._next = self._next, self._next + 1
                for at, event in self.gates:
                    if index >= at:
                        event.wait()
                self._one(http, self.ops[index])

    def _one(self, http: httpx.Client, op: str) -> None:
        op, method, path, body, target = self._request(op)
        answer = Answer(op, method, path, uuid.uuid4().hex, time.monotonic(), target=target)
        needs_worker = op in (NAT_ADD, NAT_DEL)
        with self.progress:
            self.started += 1
            self.waiting_on_worker += needs_worker
            self.progress.notify_all()
        try:
            resp = http.request(method, path, json=body, headers={REQUEST_ID_HEADER: answer.request_id})
            answer.status, answer.text = resp.status_code, resp.text[:500]
            if resp.headers.get("content-type", "").startswith("application/json"):
                answer.body = resp.json()
        except httpx.HTTPError as exc:
            answer.error = f"{type(exc).__name__}: {exc}"
        answer.ended = time.monotonic()
        with self.progress:
            self.waiting_on_worker -= needs_worker
            self.progress.notify_all()
            self.answers.append(answer)
            if op == NAT_ADD and answer.accepted:
                assert answer.body is not None
                self._rules.append((target["vm"], int(answer.body["data"]["rule_index"]), target["port"]))

    def _request(self, op: str) -> tuple[str, str, str, dict[str, Any] | None, dict[str, Any]]:
        """(op, method, path, JSON body, target) of the next request of kind ``op``."""
        with self._lock:
            if op == NAT_DEL and self._rules:
                vm, idx, port = self._rules.pop(self._rng.randrange(len(self._rules)))
                return op, "DELETE", f"/api/client/natdel/{self.hs}/{vm}/{idx}", None, \
                    {"vm": vm, "rule_index": idx, "port": port}
            if op == CREATE:
                vm = f"{self.prefix}{self._creates}"
                self._creates += 1
                body = {"vm_uuid": vm, "os_name": self.image, "cpu_num": 1, "ram_num": 64, "hdd_num": 1}
                return op, "POST", f"/api/client/create/{self.hs}", body, {"vm": vm}
            if op == NAT_ADD:
                vm, port = self._rng.choice(self.nat_vms), self.ports()
                return op, "POST", f"/api/client/natadd/{self.hs}/{vm}", \
                    {"host_port": port, "vm_port": 80, "protocol": "tcp"}, {"vm": vm, "port": port}
            # a read (also a NAT delete with nothing to delete yet)
            path = self._rng.choice(["/api/system/engine", "/api/server/detail", f"/api/client/detail/{self.hs}",
                                     "/api/users/current", f"/api/client/natget/{self.hs}/{self.nat_vms[0]}"])
            return READ, "GET", path, None, {}
