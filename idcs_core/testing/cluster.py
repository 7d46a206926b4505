"""A real cluster for tests and benchmarks: API nodes (``idcs serve``) and workers (``idcs worker``)
on one PostgreSQL database, with a real HAProxy (Debian ``haproxy``) round robin in front.

    with Cluster(tmp, database_url, nodes=3) as cluster:   # ready: every node passes HAProxy's check
        cluster.url                       # HAProxy's front end
        cluster.kill_node(1)              # SIGKILL, as a crash; HAProxy marks it down
        cluster.start_node(1)             # the same node again (same port, data dir, name)
        cluster.kill_worker(); cluster.start_worker()
        cluster.haproxy.log_entries()     # one parsed access-log line per request HAProxy answered

Each node has a data directory of its own (as on separate machines) holding copies of the first
node's key files (``jwt.key``, ``fernet.key``): every node signs and reads the same tokens and
secrets. Nodes are started with ``--no-worker`` and one separate worker runs the tasks when this
``idcs`` has them (issue 19); otherwise plain ``idcs serve`` nodes, each running its own tasks.
Every process is started in a session of its own and stopped by its PID, never by name.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx

from idcs_core.testing.backends import free_port, log_tail, start_process, stop_pid
from idcs_core.testing.server import ADMIN_PASSWORD, ApiClient

__all__ = ["Cluster", "HAProxy", "LogEntry", "Proc", "haproxy_config", "idcs_supports"]

KEY_FILES = ("jwt.key", "fernet.key")
REQUEST_ID_HEADER = "X-Test-Request"
# One access-log line per request: the request id the client sent, the server that answered (or
# <NOSRV>), the status, HAProxy's termination state (e.g. "SH--": the server closed the connection
# before answering, a 502 of a killed node), the method and the path.
LOG_FORMAT = "req=%[capture.req.hdr(0)] srv=%s status=%ST term=%tsc method=%HM path=%HPO"
_LOG_LINE = re.compile(r"req=(?P<req>\S*) srv=(?P<srv>\S+) status=(?P<status>-?\d+) term=(?P<term>\S+) "
                       r"method=(?P<method>\S+) path=(?P<path>\S*)")


class ClusterError(RuntimeError):
    """A process of the cluster did not start or did not become ready (the message ends with its log)."""


@cache
def idcs_supports(word: str, subcommand: str | None = None) -> bool:
    """Whether this ``idcs`` knows ``word``: a subcommand (``worker``) or, with ``subcommand``,
    one of that subcommand's options (``--no-worker`` of ``serve``)."""
    cmd = [sys.executable, "-m", "idcs_core.cli", *([subcommand] if subcommand else []), "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60).stdout
    return word in out


@dataclass
class Proc:
    """One process of the cluster: how to start it, and the running process."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        self.proc = start_process(self.cmd, self.log_path, self.env)

    def kill(self) -> None:
        """SIGKILL, as a crash: no shut-down code runs."""
        assert self.proc is not None, f"{self.name} is not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM by PID (SIGKILL after 30 s)."""
        if self.proc is not None:
            stop_pid(self.proc.pid, proc=self.proc)
            self.proc = None

    def exited(self) -> str | None:
        """The failure text if the process ended on its own, else None."""
        if self.proc is not None and self.proc.poll() is not None:
            return f"{self.name} exited with {self.proc.returncode}:\n{log_tail(self.log_path)}"
        return None


@dataclass(frozen=True)
class LogEntry:
    """One request as HAProxy logged it."""

    request_id: str
    server: str
    status: int
    termination: str
    method: str
    path: str


def haproxy_config(port: int, servers: Mapping[str, int], stats_port: int, log_requests: bool = True) -> str:
    """An HAProxy configuration: round robin over ``servers`` (name → loopback port) on ``port``.

    Health checks (``GET /health`` every 300 ms; down after 2 failures, up after 1 success) take a
    dead node out; ``retries`` with ``option redispatch`` send a request whose connection was refused
    to the next node (nothing was sent, so even a POST is safe to send again); a request already sent
    to a node that dies is answered 502 by HAProxy (it is never sent twice). The access log goes
    to stdout, one line per request (``LOG_FORMAT``), unless ``log_requests`` is off (benchmarks)."""
    lines = [
        "global",
        "    maxconn 4096",
        "    log stdout format raw local0 info",
        "defaults",
        "    mode http",
    ]
    if log_requests:
        lines += ["    log global", f'    log-format "{LOG_FORMAT}"']
    lines += [
        "    timeout connect 2s",
        "    timeout client 300s",
        "    timeout server 300s",
        "    timeout http-request 30s",
        "    retries 3",
        "    option redispatch 1",
        "    retry-on conn-failure",
        "frontend api",
        f"    bind 127.0.0.1:{port}",
        f"    http-request capture req.hdr({REQUEST_ID_HEADER}) len 64",
        "    default_backend nodes",
        "backend nodes",
        "    balance roundrobin",
        "    option httpchk GET /health",
        "    http-check expect status 200",
        "    default-server inter 300ms fastinter 200ms downinter 300ms fall 2 rise 1",
    ]
    lines += [f"    server {name} 127.0.0.1:{p} check" for name, p in servers.items()]
    lines += ["listen stats", f"    bind 127.0.0.1:{stats_port}", "    stats enable", "    stats uri /stats"]
    return "\n".join(lines) + "\n"


class HAProxy:
    """One haproxy in the foreground (``-db``) with a config written here; stopped by its PID."""

    def __init__(self, folder: Path, servers: Mapping[str, int], port: int | None = None,
                 log_requests: bool = True) -> None:
        exe = shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        if not exe:
            raise ClusterError("haproxy is not installed: run scripts/install-backends.sh (backends/cluster.sh)")
        self.folder = folder
        self.port = port or free_port()
        self.stats_port = free_port()
        self.servers = dict(servers)
        self.config_path = folder / "haproxy.cfg"
        self.config_path.write_text(haproxy_config(self.port, self.servers, self.stats_port, log_requests))
        check = subprocess.run([exe, "-c", "-f", str(self.config_path)], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise ClusterError(f"haproxy rejects its config:\n{check.stdout}{check.stderr}")
        self.proc = Proc("haproxy", [exe, "-db", "-f", str(self.config_path)], dict(os.environ), folder / "haproxy.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc.start()

    def stop(self) -> None:
        self.proc.stop()

    def server_states(self) -> dict[str, str]:
        """Each server's state as HAProxy sees it (``UP``, ``DOWN``, ``UP 1/2``...), from the stats CSV."""
        text = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5).text
        header, *rows = text.splitlines()
        names = header.lstrip("# ").split(",")
        states: dict[str, str] = {}
        for row in rows:
            values = dict(zip(names, row.split(","), strict=False))
            if values.get("pxname") == "nodes" and values.get("svname") in self.servers:
                states[values["svname"]] = values.get("status", "")
        return states

    def wait_state(self, name: str, up: bool, timeout: float = 60) -> None:
        """Poll the stats page until HAProxy sees server ``name`` up (or down)."""
        deadline = time.monotonic() + timeout
        while True:
            if failure := self.proc.exited():
                raise ClusterError(failure)
            try:
                state = self.server_states().get(name, "")
            except httpx.HTTPError as exc:  # haproxy is starting
                state = f"(stats page: {exc})"
            if state.startswith("UP" if up else "DOWN") and (not up or "/" not in state):
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"haproxy still sees {name} as {state!r} after {timeout:g} s")
            time.sleep(0.05)

    def log_entries(self) -> list[LogEntry]:
        """Every request HAProxy logged so far (health checks are not logged)."""
        entries: list[LogEntry] = []
        for line in self.proc.log_path.read_text(errors="replace").splitlines():
            m = _LOG_LINE.search(line)
            if m:
                req = m["req"].strip("{}")
                entries.append(LogEntry(req if req != "-" else "", m["srv"], int(m["status"]), m["term"], m["method"],
                                        m["path"]))
        return entries


@dataclass
class Cluster:
    """``nodes`` API nodes and ``workers`` workers on ``database_url``, HAProxy in front."""

    folder: Path
    database_url: str
    nodes: int = 3
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    log_requests: bool = True  # HAProxy's access log (the tests read it; benchmarks turn it off)
    node_procs: list[Proc] = field(default_factory=list)
    node_ports: list[int] = field(default_factory=list)
    worker_procs: list[Proc] = field(default_factory=list)
    haproxy: HAProxy | None = None

    @property
    def separate_workers(self) -> bool:
        """Whether this ``idcs`` has ``idcs worker`` and ``serve --no-worker`` (else nodes run their tasks)."""
        return idcs_supports("worker") and idcs_supports("--no-worker", "serve")

    @property
    def url(self) -> str:
        assert self.haproxy is not None, "the cluster is not started"
        return self.haproxy.url

    def node_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.node_ports[i]}"

    def node_name(self, i: int) -> str:
        return f"node{i}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ) | {"IDCS_ADMIN_PASSWORD": ADMIN_PASSWORD, "IDCS_DATABASE_URL": self.database_url}
        env.pop("IDCS_DATA_DIR", None)
        return env | self.env

    def _data_dir(self, name: str) -> Path:
        folder = self.folder / name
        folder.mkdir(parents=True, exist_ok=True)
        first = self.folder / self.node_name(0)
        if folder != first:  # the same keys on every node, as an operator copies them to each machine
            for key in KEY_FILES:
                if (first / key).exists() and not (folder / key).exists():
                    shutil.copy2(first / key, folder / key)
        return folder

    def _node_proc(self, i: int) -> Proc:
        name = self.node_name(i)
        data = self._data_dir(name)
        cmd = [sys.executable, "-m", "idcs_core.cli", "serve", "--host", "127.0.0.1", "--port", str(self.node_ports[i]),
               "--data-dir", str(data), "--log-level", "info"]
        if self.separate_workers:
            cmd += ["--no-worker", "--name", name]
        return Proc(name, cmd, self._env(), data / "server.log")

    def _worker_proc(self, i: int) -> Proc:
        name = f"worker{i}"
        data = self._data_dir(name)
        cmd = [sys.executable, "-m", "idcs_core.cli", "worker", "--data-dir", str(data), "--name", name]
        return Proc(name, cmd, self._env(), data / "worker.log")

    # -- life cycle
    def start(self) -> Cluster:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.node_ports = [free_port() for _ in range(self.nodes)]
        try:
            # the first node alone: it creates the schema, the first admin and the key files
            self.node_procs = [self._node_proc(0)]
            self.node_procs[0].start()
            self._wait_node(0)
            self.node_procs += [self._node_proc(i) for i in range(1, self.nodes)]
            for proc in self.node_procs[1:]:
                proc.start()
            for i in range(1, self.nodes):
                self._wait_node(i)
            if self.separate_workers:
                self.worker_procs = [self._worker_proc(i) for i in range(self.workers)]
                for proc in self.worker_procs:
                    proc.start()
                for i in range(self.workers):
                    self.wait_worker(i)
            self.haproxy = HAProxy(self.folder, {self.node_name(i): p for i, p in enumerate(self.node_ports)},
                                   log_requests=self.log_requests)
            self.haproxy.start()
            for i in range(self.nodes):
                self.haproxy.wait_state(self.node_name(i), up=True)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_node(self, i: int, timeout: float = 60) -> None:
        proc = self.node_procs[i]
        deadline = time.monotonic() + timeout
        while True:
            if failure := proc.exited():
                raise ClusterError(failure)
            try:
                if httpx.get(f"{self.node_url(i)}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"{proc.name} not ready after {timeout:g} s:\n{log_tail(proc.log_path)}")
            time.sleep(0.05)

    def wait_worker(self, i: int, timeout: float = 60) -> None:
        """Until ``idcs cluster status`` lists worker ``i`` (on an ``idcs`` without that command: at once,
        if the process has not ended)."""
        proc = self.worker_procs[i]
        deadline = time.monotonic() + timeout
        while True:
            if failure := proc.exited():
                raise ClusterError(failure)
            if not idcs_supports("cluster") or proc.name in self.cluster_status_text():
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"{proc.name} not listed by `idcs cluster status` after {timeout:g} s:\n"
                                   f"{log_tail(proc.log_path)}")
            time.sleep(0.2)

    def cluster_status_text(self) -> str:
        """What ``idcs cluster status`` prints (empty if this ``idcs`` has no such command)."""
        if not idcs_supports("cluster"):
            return ""
        out = subprocess.run([sys.executable, "-m", "idcs_core.cli", "cluster", "status", "--data-dir",
                              str(self.folder / self.node_name(0))], capture_output=True, text=True, check=False,
                             env=self._env(), timeout=60)
        return out.stdout + out.stderr

    def stop(self) -> None:
        """HAProxy, then the workers, then the nodes: each by its PID."""
        if self.haproxy is not None:
            self.haproxy.stop()
        for proc in [*self.worker_procs, *self.node_procs]:
            proc.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- chaos
    def kill_node(self, i: int) -> None:
        """SIGKILL node ``i`` and wait until HAProxy has taken it out."""
        self.node_procs[i].kill()
        assert self.haproxy is not None
        self.haproxy.wait_state(self.node_name(i), up=False)

    def start_node(self, i: int) -> None:
        """Start node ``i`` again and wait until HAProxy sends it requests."""
        self.node_procs[i].start()
        self._wait_node(i)
        assert self.haproxy is not None
        self.haproxy.wait_state(self.node_name(i), up=True)

    def kill_worker(self, i: int = 0) -> None:
        self.worker_procs[i].kill()

    def start_worker(self, i: int = 0) -> None:
        self.worker_procs[i].start()
        self.wait_worker(i)

    # -- clients
    def client(self, token: str | None = None, node: int | None = None) -> ApiClient:
        """A client of HAProxy's front end (or, with ``node``, of that node directly)."""
        return ApiClient(self.url if node is None else self.node_url(node), token)

    def admin(self, node: int | None = None) -> ApiClient:
        c = self.client(node=node)
        c.login("admin", ADMIN_PASSWORD)
        return c

    def logs(self, names: Sequence[str] = ()) -> str:
        """The tails of the named processes' logs (all when none are named), for a failure message."""
        procs = [*self.node_procs, *self.worker_procs] + ([self.haproxy.proc] if self.haproxy else [])
        return "\n".join(f"--- {p.name}\n{log_tail(p.log_path, 30)}" for p in procs if not names or p.name in names)
