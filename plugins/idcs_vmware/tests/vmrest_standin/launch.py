"""Start and stop the vmrest stand-in (``server.py``) as a separate process, for tests and the bench."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from idcs_core.testing import backends
from idcs_core.testing.backends import free_port

SERVER = Path(__file__).with_name("server.py")
TEMPLATE = "template-debian-12"
MEDIA = "application/vnd.vmware.vmw.rest-v1+json"


@dataclass
class StandIn:
    """A running stand-in: its URL, credentials, process and folder."""

    url: str
    user: str
    password: str
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def call(self, method: str, path: str, body: Any = None, raw: str | None = None) -> httpx.Response:
        """A request straight to the stand-in (behind OpenIDCS's back)."""
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        headers = {"Authorization": f"Basic {token}", "Accept": MEDIA, "Content-Type": MEDIA}
        content = raw.encode() if raw is not None else None
        return httpx.request(method, self.url + path, json=body if raw is None else None, content=content,
                             headers=headers, timeout=10, verify=False)  # the stand-in's own certificate

    def vm_id(self, name: str) -> str | None:
        for vm in self.call("GET", "/api/vms").json():
            if Path(vm["path"]).stem == name:
                return str(vm["id"])
        return None

    def guest_file(self, name: str, path: str) -> Path:
        """Where ``path`` inside the VM ``name`` lives on the stand-in's disk (its guest-root folder)."""
        root = (self.workdir / "vms" / name / "guest-root").resolve()
        target = (root / path.lstrip("/")).resolve()
        if not target.is_relative_to(root):
            raise ValueError(f"{path} leaves the guest's file system")
        return target

    def write_file(self, name: str, path: str, text: str) -> None:
        target = self.guest_file(name, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def read_file(self, name: str, path: str) -> str | None:
        target = self.guest_file(name, path)
        return target.read_text() if target.is_file() else None

    def log_tail(self) -> str:
        return backends.log_tail(self.workdir / "standin.log", 30)

    def stop(self) -> None:
        """SIGTERM by PID (it stops its guests and forwarders), SIGKILL if it hangs; remove its folder."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # in case a test left it frozen
            backends.stop_pid(self.process.pid, timeout=10, proc=self.process)
        with contextlib.suppress(ProcessLookupError):  # guests left by a stand-in that was SIGKILLed
            os.killpg(self.process.pid, signal.SIGKILL)
        if not os.environ.get("VMREST_STANDIN_LOG"):
            shutil.rmtree(self.workdir, ignore_errors=True)


def require_tools() -> None:
    """The stand-in's guests need busybox (httpd) and TigerVNC's Xvnc: fail loudly without them."""
    missing = [tool for tool in ("busybox", "Xvnc") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"the vmrest stand-in needs {missing}: run scripts/backends/vmware.sh "
                           "(apt-get install busybox tigervnc-standalone-server)")


def start(templates: tuple[str, ...] = (TEMPLATE,), user: str = "vmware-admin", tls: bool = False) -> StandIn:
    """Start a stand-in on a free loopback port with ``templates`` (HTTPS with a self-signed
    certificate when ``tls``); wait until it serves."""
    require_tools()
    workdir = Path(tempfile.mkdtemp(prefix="idcs-vmrest-standin-"))
    password = "Vm-" + secrets.token_hex(8)
    port = free_port()
    args = [sys.executable, str(SERVER), "--port", str(port), "--user", user, "--workdir", str(workdir)]
    for name in templates:
        args += ["--template", name]
    if tls:
        args.append("--tls")
    env = {**os.environ, "VMREST_STANDIN_PASSWORD": password}
    # a session of its own: its guests share its process group (see stop())
    process = backends.start_process(args, workdir / "standin.log", env)
    standin = StandIn(f"{'https' if tls else 'http'}://127.0.0.1:{port}", user, password, process, workdir)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = standin.log_tail()
            standin.stop()
            raise RuntimeError(f"the vmrest stand-in exited with {process.returncode}:\n{tail}")
        try:
            if standin.call("GET", "/api/vms").status_code == 200:
                return standin
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    standin.stop()
    raise RuntimeError("the vmrest stand-in did not answer within 15 s")
