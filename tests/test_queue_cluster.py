"""Tasks on the procrastinate queue with real processes on the local PostgreSQL and real Docker:

- an ``idcs serve --no-worker`` node queues the work, a separate ``idcs worker`` runs it (creates,
  a NAT add that answers with its result, a delete), and stops cleanly on SIGTERM;
- a worker SIGKILLed in the middle of creates and a NAT add: a worker started meanwhile leaves the
  live worker's jobs alone, then recovers them once it is dead; Docker and the records agree;
- ``idcs cluster status`` and the ``cluster`` object of ``GET /api/system/stats``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from idcs_core.testing.backends import start_process, stop_pid
from idcs_core.testing.databases import drop_postgres_schema, fresh_postgres_url
from idcs_core.testing.server import LiveServer, free_port

HERE = Path(__file__).parent
RECOVERED = "recovered after a restart"
PREFIX = "queue"


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _sql(url: str, query: str, **params: Any) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            return list(conn.execute(text(query), params).all())
    finally:
        engine.dispose()


class Cluster:
    """One database, one data dir (the nodes share its keys), the processes started on them."""

    def __init__(self, root: Path, url: str) -> None:
        self.root, self.url, self.data = root, url, root / "data"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def worker(self, name: str, lab: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``idcs worker`` (with ``lab``: the crash-point Docker engine) and wait until it is registered."""
        env = dict(os.environ)
        if lab is None:
            cmd = [sys.executable, "-m", "idcs_core.cli", "worker", "--database-url", self.url,
                   "--data-dir", str(self.data), "--name", name, "--concurrency", "4"]
        else:
            env |= {"CRASHLAB_DIR": str(lab),
                    "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)}
            cmd = [sys.executable, str(HERE / "queuelab_worker.py"), "--database-url", self.url,
                   "--data-dir", str(self.data), "--name", name]
        proc = start_process(cmd, self.root / f"{name}.log", env)
        self.procs[name] = proc
        _wait_for(f"worker {name} to register", lambda: proc.poll() is None and bool(_sql(
            self.url, "SELECT 1 FROM cluster_nodes WHERE name = :n AND worker_id IS NOT NULL", n=name)), 60)
        return proc

    def worker_id(self, name: str) -> int:
        [(wid,)] = _sql(self.url, "SELECT worker_id FROM cluster_nodes WHERE name = :n", n=name)
        return int(wid)

    def stop(self) -> None:
        for proc in self.procs.values():
            stop_pid(proc.pid, proc=proc)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, oci_backend: Any) -> Iterator[tuple[Cluster, LiveServer, Any]]:
    from idcs_oci.engine import OCIEngine

    url = fresh_postgres_url()
    root = tmp_path_factory.mktemp("queue")
    nodes = Cluster(root, url)
    api = LiveServer(nodes.data, database_url=url, subprocess_mode=True,
                     serve_args=["--no-worker", "--name", "api-1"]).start()
    spec = oci_backend.host_spec("queue-docker")
    admin = api.admin()
    admin.post("/api/server/create", {"server_name": "h", "server_type": spec.server_type, "server_addr": spec.addr,
                                      "server_user": "", "server_pass": "", "options": spec.options})
    engine = OCIEngine()
    try:
        yield nodes, api, (engine, spec, oci_backend.image)
    finally:
        nodes.stop()
        api.stop()
        for vm in engine.vm_list(host=spec):
            if vm.vm_uuid.startswith(PREFIX):
                engine.vm_delete(host=spec, vm_uuid=vm.vm_uuid, progress=lambda *_a: None)
        engine.clients.close_all()
        drop_postgres_schema(url)


def _on_host(backend: Any, prefix: str) -> dict[str, str]:
    engine, spec, _image = backend
    return {v.vm_uuid: v.status for v in engine.vm_list(host=spec) if v.vm_uuid.startswith(prefix)}


def _vm_spec(backend: Any) -> dict[str, Any]:
    return {"os_name": backend[2], "cpu_num": 1, "ram_num": 64, "hdd_num": 1}


def test_a_separate_worker_runs_the_tasks_and_stops_on_sigterm(cluster: tuple[Cluster, LiveServer, Any]) -> None:
    nodes, api, backend = cluster
    admin = api.admin()
    name = f"{PREFIX}{uuid.uuid4().hex[:6]}-w"
    started = admin.post("/api/client/create/h", {"vm_uuid": name, **_vm_spec(backend)}, params={"wait": 0})
    time.sleep(1.0)  # the API node has no worker: nothing runs the job yet
    assert admin.get(f"/api/tasks/{started['task_id']}")["state"] == "pending"
    stats = admin.get("/api/system/stats")["cluster"]
    assert stats["queue"]["backend"] == "procrastinate" and stats["queue"]["waiting"] >= 1, stats
    assert stats["queue"]["oldest_waiting_seconds"] >= 0.5, stats

    worker = nodes.worker("w1")
    task = admin.wait_task(started["task_id"], 120)
    assert task["state"] == "success", task
    assert _on_host(backend, name) == {name: "running"}
    assert admin.get(f"/api/client/detail/h/{name}")["status"] == "running"

    # a call that answers with its task's result: the job runs on the worker, the API node waits on the row
    port = free_port()
    rule = admin.post(f"/api/client/natadd/h/{name}", {"host_port": port, "vm_port": 80, "protocol": "tcp"})
    assert rule is not None
    assert [r["host_port"] for r in admin.get(f"/api/client/natget/h/{name}")] == [port]

    status = subprocess.run([sys.executable, "-m", "idcs_core.cli", "cluster", "status", "--database-url", nodes.url,
                             "--data-dir", str(nodes.data)], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    for shown in ("api-1", "w1", "queue (procrastinate)"):
        assert shown in status.stdout, status.stdout
    assert "nodes: 2 alive of 2" in status.stdout, status.stdout
    seen = {n["name"]: n for n in admin.get("/api/system/stats")["cluster"]["nodes"]}
    assert seen["api-1"]["role"] == "api" and seen["w1"]["role"] == "worker" and seen["w1"]["alive"]

    # SIGTERM while a delete runs: the worker finishes it, records it, leaves the registry
    deleting = admin.delete(f"/api/client/delete/h/{name}", params={"wait": 0})
    _wait_for("the delete to start", lambda: admin.get(f"/api/tasks/{deleting['task_id']}")["state"] != "pending")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    task = admin.get(f"/api/tasks/{deleting['task_id']}")
    assert task["state"] == "success" and RECOVERED not in task["message"], task
    assert _on_host(backend, name) == {}
    assert not _sql(nodes.url, "SELECT 1 FROM cluster_nodes WHERE name = 'w1'")


def test_a_killed_worker_is_recovered_by_another(cluster: tuple[Cluster, LiveServer, Any]) -> None:
    nodes, api, backend = cluster
    admin = api.admin()
    prefix = f"{PREFIX}{uuid.uuid4().hex[:6]}"
    lab, calm = nodes.root / f"lab-{prefix}", nodes.root / f"calm-{prefix}"
    lab.mkdir()
    calm.mkdir()
    nodes.worker("k1", lab)
    premade = f"{prefix}-n"
    admin.run_task("POST", "/api/client/create/h", {"vm_uuid": premade, **_vm_spec(backend)}, timeout=120)

    during, after = f"{prefix}-during", f"{prefix}-after"
    points = {f"vm_create:{during}": "during", f"vm_create:{after}": "after", f"nat_add:{premade}": "before"}
    (lab / "points.json").write_text(json.dumps(points))
    tasks = {n: admin.post("/api/client/create/h", {"vm_uuid": n, **_vm_spec(backend)}, params={"wait": 0})["task_id"]
             for n in (during, after)}
    nat_port = free_port()
    answer: dict[str, Any] = {}

    def add_nat() -> None:  # waits on the API node while the worker that runs it dies and another recovers it
        r = httpx.post(f"{api.url}/api/client/natadd/h/{premade}", timeout=180,
                       json={"host_port": nat_port, "vm_port": 80, "protocol": "tcp"},
                       headers={"Authorization": f"Bearer {admin.token}"})
        answer.update(r.json())

    caller = threading.Thread(target=add_nat)
    caller.start()
    _wait_for("every task to reach its point",
              lambda: (lab / "reached").exists() and {f.name for f in (lab / "reached").glob("*")} >= set(points))

    # a node starting now (its start runs the recovery) leaves the jobs of the live worker alone
    nodes.worker("k2", calm)
    time.sleep(3.0)
    k1 = nodes.worker_id("k1")
    doing = _sql(nodes.url, "SELECT args->>'task_id', worker_id FROM procrastinate_jobs WHERE status = 'doing'")
    assert {t for t, _w in doing} >= set(tasks.values()) and {w for _t, w in doing} == {k1}, doing
    for task_id in tasks.values():
        task = admin.get(f"/api/tasks/{task_id}")
        assert task["state"] == "running" and "recover" not in task["message"], task

    nodes.procs["k1"].kill()  # SIGKILL
    nodes.procs["k1"].wait(10)
    ended = {n: admin.wait_task(t, 120) for n, t in tasks.items()}
    caller.join(120)
    assert ended[during]["state"] == "failed" and "stopped" in ended[during]["message"], ended[during]
    assert ended[after]["state"] == "success" and RECOVERED in ended[after]["message"], ended[after]
    assert answer.get("code") not in (None, 200), answer  # the NAT call answered with its task's failure
    records = {v["vm_uuid"]: v["status"] for v in admin.get("/api/client/detail/h") if v["vm_uuid"].startswith(prefix)}
    assert records == _on_host(backend, prefix) == {premade: "running", after: "running"}
    assert admin.get(f"/api/client/natget/h/{premade}") == []
    assert [t for t in admin.get("/api/tasks", params={"limit": 100}) if t["state"] in ("pending", "running")] == []
    status = {n["name"]: n for n in admin.get("/api/system/stats")["cluster"]["nodes"]}
    assert "k1" not in status and status["k2"]["alive"], status  # the dead node left the registry
