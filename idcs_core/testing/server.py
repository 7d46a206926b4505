"""A real idcs server on a free loopback port, and a small client for its API.

``LiveServer`` runs uvicorn in a thread of the test process (so a test can hand it
plugins registered in-process) or, with ``subprocess=True``, as ``idcs serve`` in a
child process (to test installed entry points and restarts).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from idcs_core.config import Config
from idcs_core.plugins import PluginRegistry

ADMIN_PASSWORD = "admin-Secret-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ApiError(AssertionError):
    pass


class ApiClient:
    """Calls the API and returns the envelope; ``ok`` variants assert code 200 and return data."""

    def __init__(self, base_url: str, token: str | None = None, verify: bool = True) -> None:
        self.base_url = base_url
        self.token = token
        self.verify = verify
        self.http = httpx.Client(base_url=base_url, timeout=120, verify=verify)

    def close(self) -> None:
        self.http.close()

    def with_token(self, token: str | None) -> ApiClient:
        return ApiClient(self.base_url, token, verify=self.verify)

    def call(self, method: str, path: str, json: Any = None, **kw: Any) -> tuple[int, dict[str, Any]]:
        headers = dict(kw.pop("headers", {}) or {})
        if self.token and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.token}"
        resp = self.http.request(method, path, json=json, headers=headers, **kw)
        try:
            body = resp.json()
        except ValueError as exc:
            raise ApiError(f"{method} {path}: not JSON ({resp.status_code}): {resp.text[:300]}") from exc
        return resp.status_code, body

    def ok(self, method: str, path: str, json: Any = None, **kw: Any) -> Any:
        status, body = self.call(method, path, json, **kw)
        if status != 200 or body.get("code") != 200:
            raise ApiError(f"{method} {path} -> HTTP {status}: {body}")
        return body["data"]

    def get(self, path: str, **kw: Any) -> Any:
        return self.ok("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.ok("POST", path, json if json is not None else {}, **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.ok("PUT", path, json if json is not None else {}, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.ok("DELETE", path, **kw)

    def login(self, username: str, password: str) -> str:
        data = self.post("/login", {"username": username, "password": password})
        self.token = data["token"]
        return str(self.token)

    def wait_task(self, task_id: str, timeout: float = 300) -> dict[str, Any]:
        """Wait for a task to end; return it (state success or failed)."""
        deadline = time.monotonic() + timeout
        while True:
            task = self.get(f"/api/tasks/{task_id}", params={"wait": min(30, timeout)})
            if task["state"] in ("success", "failed"):
                return dict(task)
            if time.monotonic() > deadline:
                raise ApiError(f"task {task_id} still {task['state']} after {timeout}s: {task}")

    def run_task(self, method: str, path: str, json: Any = None, timeout: float = 300) -> dict[str, Any]:
        """Start a task-returning call, wait for it, assert it succeeded."""
        started = self.ok(method, path, json)
        task = self.wait_task(started["task_id"], timeout)
        if task["state"] != "success":
            raise ApiError(f"{method} {path}: task failed: {task}")
        return task


class LiveServer:
    """``with LiveServer(tmp_path, plugins=...) as srv:`` → ``srv.url``, ``srv.admin()``."""

    def __init__(self, data_dir: Path, *, database_url: str | None = None, plugins: PluginRegistry | None = None,
                 subprocess_mode: bool = False, env: dict[str, str] | None = None, port: int | None = None,
                 host_timeout: float = 3.0, tls: bool = False, serve_args: list[str] | None = None,
                 ready_timeout: float = 30.0) -> None:
        self.data_dir = Path(data_dir)
        self.database_url = database_url
        self.plugins = plugins
        self.subprocess_mode = subprocess_mode
        self.env = env or {}
        self.port = port or free_port()
        self.host_timeout = host_timeout
        self.tls = tls
        self.serve_args = list(serve_args or [])  # more ``idcs serve`` options (subprocess mode)
        self.ready_timeout = ready_timeout  # seconds start() waits for /health
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "server.log"

    # -- life cycle
    def start(self) -> LiveServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.subprocess_mode:
            self._start_process()
        else:
            self._start_thread()
        self._wait_ready(self.ready_timeout)
        return self

    def _config(self) -> Config:
        return Config(data_dir=self.data_dir, database_url=self.database_url, host="127.0.0.1", port=self.port,
                      host_timeout=self.host_timeout, admin_password=ADMIN_PASSWORD)

    def _start_thread(self) -> None:
        from idcs_core.app import create_app

        config = uvicorn.Config(create_app(self._config(), self.plugins), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._server.serve()),  # type: ignore[union-attr]
                                        name=f"idcs-server-{self.port}", daemon=True)
        self._thread.start()

    def _start_process(self) -> None:
        env = os.environ | {"IDCS_ADMIN_PASSWORD": ADMIN_PASSWORD, "IDCS_HOST_TIMEOUT": str(self.host_timeout)}
        env |= self.env
        if self.database_url:
            env["IDCS_DATABASE_URL"] = self.database_url
        cmd = [sys.executable, "-m", "idcs_core.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--data-dir", str(self.data_dir)]
        if self.tls:
            cmd.append("--self-signed")
        cmd += self.serve_args
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"idcs serve exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                r = httpx.get(f"{self.url}/health", timeout=1, verify=False)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"idcs server on {self.url} not ready after {timeout}s\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._thread:
                self._thread.join(timeout=15)
            self._server = None
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
            self._log.close()

    def kill(self) -> None:
        """Kill the server process without a clean shut-down (crash simulation)."""
        assert self.process is not None, "kill() needs subprocess_mode"
        self.process.kill()
        self.process.wait()
        self.process = None
        self._log.close()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- clients
    def client(self, token: str | None = None) -> ApiClient:
        return ApiClient(self.url, token, verify=not self.tls)

    def admin(self) -> ApiClient:
        c = self.client()
        c.login("admin", ADMIN_PASSWORD)
        return c
