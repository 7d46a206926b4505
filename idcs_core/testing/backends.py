"""Helpers every engine's test suite needs around its real back end: free ports, HTTP probes,
daemons started in the background and stopped by their PID, and the tail of their logs.

Engine test modules (``idcs_oci.testing``, ``idcs_lxd.testing``, a new engine's own) use these
instead of writing them again; nothing here knows an engine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["free_port", "http_get", "log_tail", "start_process", "stop_pid"]


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now at ``address`` (``0.0.0.0``: on every address)."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def http_get(port: int, address: str = "127.0.0.1", path: str = "/", timeout: float = 10.0) -> str:
    """GET ``http://address:port/path`` for real and return the body, retrying while the service
    (or the forward in front of it) comes up. An HTTP error status is raised at once (the server
    answered: nothing to wait for); no answer within ``timeout`` seconds raises the last error."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=3) as response:
                return str(response.read().decode())
        except urllib.error.HTTPError:
            raise
        except (OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a daemon's log, for a failure message (never raises)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def start_process(cmd: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a daemon in the background, in a session of its own (so a test run's Ctrl-C does not
    reach it), with stdout and stderr appended to ``log_path``. Stop it with ``stop_pid``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env) if env is not None else None, start_new_session=True)


def _gone(pid: int, proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is not None:
        return proc.poll() is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stop_pid(pid: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Stop one process by its PID: SIGTERM, then SIGKILL if it is still there after ``timeout``
    seconds. Give ``proc`` when this process started it (so it is reaped). Never by name."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid, proc):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait(timeout=10)
