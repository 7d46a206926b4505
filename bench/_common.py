"""Shared pieces of the benchmarks: our server as a child process, wrk, timing, clean-up.

Everything started here is a child process remembered by PID and stopped by that PID
(or by the process group it leads); temp dirs are removed on exit. Every request goes
to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
ADMIN_PASSWORD = "Bench-Admin-Secret-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine_line() -> str:
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, OpenIDCS {rev}"
            f"{' + uncommitted changes' if dirty else ''}, load average {loadavg()}")


class Cleanup:
    """A stack of clean-up steps, run on normal exit, on an exception and on SIGTERM/SIGINT."""

    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()

    def __enter__(self) -> Cleanup:
        def on_signal(signum: int, _frame: Any) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        return self

    def __exit__(self, *exc: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            self.stack.close()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def callback(self, fn: Callable[..., Any], *args: Any) -> None:
        self.stack.callback(fn, *args)

    def tempdir(self, prefix: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.stack.callback(shutil.rmtree, path, True)
        return path


def stop_process(proc: subprocess.Popen[bytes], group: bool = False, timeout: float = 15) -> None:
    """SIGTERM the child (or the process group it leads), then SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)

    send(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(timeout=10)
    if group:  # reap what the leader left behind in its group (e.g. the Werkzeug reloader's child)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                r.read()
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:g}s:\n{tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def request(method: str, url: str, body: Any = None, token: str | None = None,
            timeout: float = 120) -> tuple[int, Any]:
    """One HTTP request (to 127.0.0.1); returns (HTTP status, decoded JSON body or text)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


@dataclass
class OurServer:
    """``idcs serve`` on a free loopback port with a fresh data dir, as a child process."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    pin: str | None = None  # CPU list for taskset
    log_level: str = "warning"
    entry: list[str] = field(default_factory=lambda: ["-m", "idcs_core.cli"])  # how python starts the CLI
    proc: subprocess.Popen[bytes] | None = None
    token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir / "server.log"

    def start(self, cleanup: Cleanup) -> OurServer:
        env = os.environ | {"IDCS_ADMIN_PASSWORD": ADMIN_PASSWORD} | self.env
        cmd = [sys.executable, *self.entry, "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--data-dir", str(self.data_dir), "--log-level", self.log_level]
        if self.pin:
            cmd = ["taskset", "-c", self.pin, *cmd]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        cleanup.callback(stop_process, self.proc)
        wait_http(f"{self.url}/health", self.proc, self.log)
        status, body = request("POST", f"{self.url}/login", {"username": "admin", "password": ADMIN_PASSWORD})
        if status != 200 or body.get("code") != 200:
            raise RuntimeError(f"login failed: {status} {body}")
        self.token = body["data"]["token"]
        return self

    def call(self, method: str, path: str, body: Any = None, timeout: float = 300) -> Any:
        """The data of a successful call; RuntimeError otherwise."""
        status, env = request(method, self.url + path, body, self.token, timeout)
        if status != 200 or not isinstance(env, dict) or env.get("code") != 200:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {str(env)[:500]}")
        return env["data"]

    def threads(self) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
        return 0


# ------------------------------------------------------------------ wrk

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


@dataclass
class WrkResult:
    rps: float
    p50: float
    p90: float
    p99: float
    requests: int
    bad: int  # non-2xx/3xx answers plus socket errors

    def row(self) -> str:
        return (f"{self.rps:8.0f} rps  p50 {self.p50:7.2f} ms  p99 {self.p99:7.2f} ms  "
                f"({self.requests} req, {self.bad} bad)")


def wrk(url: str, token: str, duration: float, connections: int, threads: int = 2,
        pin: str | None = None) -> WrkResult:
    """One wrk run against ``url`` (127.0.0.1 only) with the bearer token; parsed."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("benchmarks only target 127.0.0.1")
    cmd = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{duration:g}s", "--latency",
           "--timeout", "10s", "-H", f"Authorization: Bearer {token}", url]
    if pin:
        cmd = ["taskset", "-c", pin, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    try:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M))
        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    except (AttributeError, KeyError) as exc:
        raise RuntimeError(f"cannot read wrk output:\n{out}") from exc
    bad = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        bad += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        bad += sum(int(x) for x in m.groups())
    return WrkResult(rps, _ms(pct["50"]), _ms(pct["90"]), _ms(pct["99"]), requests, bad)


def median_result(results: list[WrkResult]) -> WrkResult:
    return WrkResult(statistics.median(r.rps for r in results), statistics.median(r.p50 for r in results),
                     statistics.median(r.p90 for r in results), statistics.median(r.p99 for r in results),
                     sum(r.requests for r in results), sum(r.bad for r in results))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


# ------------------------------------------------------------------ private Docker daemons


def private_dockerd(cleanup: Cleanup) -> Any:
    """A private dockerd (``idcs_oci.testing.start_dockerd``: own temp dir, stopped by its PID).

    Clean-up continues it first if a benchmark froze it (SIGSTOP), then removes its
    containers, stops it and removes its files."""
    from idcs_oci.testing import start_dockerd

    daemon = start_dockerd()

    def stop() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon.pid, signal.SIGCONT)
        daemon.stop()

    cleanup.callback(stop)
    return daemon
