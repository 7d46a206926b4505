"""A bounded mixed load through HAProxy while one API node and then the worker are killed with
SIGKILL and started again. Afterwards:

- every accepted create ended as a VM with its record and its container, or as a failed task with
  no record and no container; a create whose answer was lost has both or neither;
- every accepted NAT add that was not deleted forwards traffic to the VM, every accepted delete's
  port is closed, and no forward exists on Docker without its record (nor a record without it);
- the only 5xx answers are HAProxy's 502/503 for requests that were in flight on the killed node;
- the audit log shows every accepted change.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections import Counter
from typing import Any

from clusterlab import World
from idcs_oci.testing import free_port, http_get
from loadgen import CREATE, NAT_ADD, NAT_DEL, Answer, Load, Plan

from idcs_core.testing.server import ApiClient

KILLED = 1  # the node killed under load
SETTLE = 240.0  # seconds every task may take to end after the load (a worker restart, recoveries)


class Chaos(threading.Thread):
    """Kills node ``KILLED`` when a quarter of the load has started and starts it again; then kills the
    worker at 60 % and starts it again at 80 % (or sooner, when every load thread waits in a NAT
    request, which needs a worker). ``node_back`` and ``worker_back`` gate the load."""

    def __init__(self, world: World, load: Load) -> None:
        super().__init__(name="chaos", daemon=True)
        self.world, self.load = world, load
        self.node_back, self.worker_back = threading.Event(), threading.Event()
        self.kill_sent_at = self.kill_done_at = self.node_back_at = 0.0
        self.worker_kill_sent_at = self.worker_kill_done_at = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        cluster, n = self.world.cluster, len(self.load)
        try:
            self.load.wait_started(n // 4)
            self.kill_sent_at = time.monotonic()
            cluster.node_procs[KILLED].kill()  # SIGKILL, and wait until the process is gone
            self.kill_done_at = time.monotonic()
            assert cluster.haproxy is not None
            cluster.haproxy.wait_state(cluster.node_name(KILLED), up=False)
            cluster.start_node(KILLED)
            self.node_back_at = time.monotonic()
            self.node_back.set()
            if cluster.worker_procs:
                self.load.wait_started(n * 60 // 100)
                self.worker_kill_sent_at = time.monotonic()
                cluster.kill_worker()
                self.worker_kill_done_at = time.monotonic()
                # creates are accepted meanwhile (queued); NAT requests wait for the worker
                self.load.wait_started(n * 80 // 100, or_all_waiting_on_worker=True)
                cluster.start_worker()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.node_back.set()
            self.worker_back.set()


def _settle(admin: ApiClient, hs: str) -> list[dict[str, Any]]:
    """Wait until no task of host ``hs`` is queued or running; return its tasks."""
    deadline = time.monotonic() + SETTLE
    while True:
        tasks = [t for t in admin.get("/api/tasks", params={"limit": 1000}) if t["host_name"] == hs]
        busy = [t for t in tasks if t["state"] not in ("success", "failed")]
        if not busy:
            return tasks
        assert time.monotonic() < deadline, f"tasks still busy after {SETTLE:g} s: {busy}"
        time.sleep(0.5)


def _closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _forwards(world: World, vms: list[str]) -> set[tuple[str, int]]:
    """(vm, host port) of every NAT forwarder container on Docker for ``vms``."""
    found = world.docker.containers.list(all=True, filters={"label": "idcs.nat.forwarder"})
    return {(c.labels["idcs.nat.vm_uuid"], int(c.labels["idcs.nat.host_port"])) for c in found
            if c.labels.get("idcs.nat.vm_uuid") in vms}


def test_killing_a_node_and_the_worker_under_load_loses_nothing(world: World) -> None:
    admin, hs, cluster = world.admin, world.hs, world.cluster
    tag = secrets.token_hex(3)
    prefix, nat_vms = f"chaos{tag}-", [f"natvm{tag}-a", f"natvm{tag}-b"]
    for vm in nat_vms:
        admin.run_task("POST", f"/api/client/create/{hs}", world.vm_body(vm))

    plan = Plan()
    n = len(plan.ops())
    gates = {n * 55 // 100: threading.Event(), n * 85 // 100: threading.Event()}
    load = Load(cluster.url, str(admin.token), hs, world.image, prefix, nat_vms, free_port, plan, gates=gates)
    chaos = Chaos(world, load)
    gates[n * 55 // 100], gates[n * 85 // 100] = chaos.node_back, chaos.worker_back
    load.gates = sorted(gates.items())
    chaos.start()
    answers = load.run()
    chaos.join(timeout=300)
    assert chaos.error is None, f"chaos step failed: {chaos.error!r}\n{cluster.logs()}"
    assert len(answers) == n

    # -- 5xx: only HAProxy's, only for requests in flight on the killed node
    assert cluster.haproxy is not None
    by_id = {e.request_id: e for e in cluster.haproxy.log_entries()}
    no_answer = [a for a in answers if a.error]
    assert not no_answer, f"requests without an HTTP answer: {no_answer}"
    # A NAT request waits for its job; a job the killed worker was running is settled by the next
    # worker with the kind's recovery rule, which undoes an add ("the server stopped while NAT rule
    # ... was being added": 1005, nothing left behind, checked below). That answer is the killed
    # worker's in-flight work, in the envelope; any other 5xx from a node is not.
    interrupted = [a for a in answers if a.op == NAT_ADD and a.code == 1005 and a.body is not None
                   and "the server stopped" in str(a.body.get("msg"))
                   and a.started <= chaos.worker_kill_done_at and a.ended >= chaos.worker_kill_sent_at]
    node_5xx = [a for a in answers if a.status >= 500 and a.body is not None and a not in interrupted]
    assert not node_5xx, f"a node answered 5xx: {node_5xx}\n{cluster.logs()}"
    lost = [a for a in answers if a.status >= 500 and a not in interrupted]
    killed_name = cluster.node_name(KILLED)
    for a in lost:
        entry = by_id.get(a.request_id)
        assert entry is not None, f"HAProxy did not log {a}"
        assert entry.status in (502, 503) and entry.server == killed_name, (a, entry)
        # sent before the node was gone (its listening socket closes with the process), answered after the kill
        assert a.started <= chaos.kill_done_at and a.ended >= chaos.kill_sent_at, f"not in flight at the kill: {a}"
    print(f"\n{n} requests: {Counter(a.op for a in answers)}; answers {Counter(a.status for a in answers)}; "
          f"{len(lost)} lost on {killed_name} ({Counter(a.op for a in lost)})")
    # every other answer is the contract's: accepted, or a clear refusal (4xx) of a request
    refused = [a for a in answers if a not in lost and a not in interrupted and not a.accepted]
    assert all(400 <= a.status < 500 for a in refused), refused

    tasks = _settle(admin, hs)

    # -- creates: a VM with its record and container, or a failed task with neither
    records = _records(admin, hs, prefix)
    containers = world.containers(prefix)
    assert set(records) == containers, f"records {sorted(records)} vs containers {sorted(containers)}"
    creates = [a for a in answers if a.op == CREATE]
    task_of = {t["id"]: t for t in tasks}
    for a in creates:
        vm = a.target["vm"]
        if a.accepted:
            assert a.body is not None
            task = task_of[a.body["data"]["task_id"]]
            if task["state"] == "success":
                assert vm in records and vm in containers, (a, task)
                assert records[vm]["status"] == "running", records[vm]
            else:
                assert vm not in records and vm not in containers, (a, task)
    assert all(vm["status"] == "running" for vm in records.values()), records
    made = sum(1 for a in creates if a.accepted and task_of[a.body["data"]["task_id"]]["state"] == "success")  # type: ignore[index]
    print(f"creates: {len(creates)} sent, {sum(a.accepted for a in creates)} accepted, {made} made, "
          f"{len(records)} VMs exist")

    # -- NAT: what was accepted is there and forwards; what was deleted is gone; Docker matches the records
    rules = {(vm, r["host_port"]) for vm in nat_vms for r in admin.get(f"/api/client/natget/{hs}/{vm}")}
    assert _forwards(world, nat_vms) == rules, f"forwards on Docker vs records: {_forwards(world, nat_vms)} / {rules}"
    deleted = {(a.target["vm"], a.target["port"]) for a in answers if a.op == NAT_DEL and a.accepted}
    added = {(a.target["vm"], a.target["port"]) for a in answers if a.op == NAT_ADD and a.accepted}
    assert added - deleted <= rules, f"accepted NAT adds missing: {sorted(added - deleted - rules)}"
    assert not (deleted & rules), f"deleted NAT rules still there: {sorted(deleted & rules)}"
    for _vm, port in sorted(rules):
        assert "hello from idcs-test" in http_get(port), port
    for _vm, port in sorted(deleted):
        assert _closed(port), f"port {port} still open after its rule was deleted"
    print(f"NAT: {len(added)} adds and {len(deleted)} deletes accepted; {len(rules)} rules forward traffic")

    # -- the audit log shows every accepted change
    audit = admin.get("/api/system/logger/detail", params={"limit": 1000})
    targets = Counter(e["target"] for e in audit)
    missing = [a for a in answers if a.accepted and a.op in (CREATE, NAT_ADD, NAT_DEL)
               and not any(_audit_matches(e, a, hs) for e in audit)]
    assert not missing, f"accepted changes missing from the audit log: {missing}\n{targets.most_common(10)}"


def _records(admin: ApiClient, hs: str, prefix: str) -> dict[str, dict[str, Any]]:
    return {vm["vm_uuid"]: vm for vm in admin.get(f"/api/client/detail/{hs}") if str(vm["vm_uuid"]).startswith(prefix)}


def _audit_matches(entry: dict[str, Any], answer: Answer, hs: str) -> bool:
    """Whether audit ``entry`` records the change ``answer`` was accepted for."""
    target = f"{hs}/{answer.target['vm']}"
    if not str(entry["target"]).startswith(target):
        return False
    action, detail = str(entry["action"]), f"{entry['detail']} {entry['target']}"
    if answer.op == CREATE:
        return "create" in action
    if answer.op == NAT_ADD:
        return "nat" in action and "add" in action and str(answer.target["port"]) in detail
    return "nat" in action and ("del" in action or "remove" in action) and str(answer.target["port"]) in detail
