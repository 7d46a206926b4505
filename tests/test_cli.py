"""The idcs command: users, plugins, db upgrade, and serve's first-start admin."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from idcs_core.testing.server import free_port


def idcs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "idcs_core.cli", *args], capture_output=True, text=True,
                          env=(os.environ | (env or {})), timeout=60)


def test_user_commands(tmp_path: Path) -> None:
    data = str(tmp_path)
    assert idcs("db", "upgrade", "--data-dir", data).returncode == 0
    out = idcs("user", "create", "carol", "--email", "carol@example.com", "--password", "pw-carol-1",
               "--data-dir", data)
    assert out.returncode == 0, out.stderr
    out = idcs("user", "create", "carol", "--password", "x", "--data-dir", data)
    assert out.returncode == 1 and "already exists" in out.stderr
    listed = idcs("user", "list", "--data-dir", data).stdout
    assert "carol" in listed and "carol@example.com" in listed
    out = idcs("user", "passwd", "carol", "--data-dir", data, env={"IDCS_PASSWORD": "pw-carol-2"})
    assert out.returncode == 0 and "pw-carol-2" not in out.stdout + out.stderr
    assert idcs("user", "passwd", "nobody", "--password", "x", "--data-dir", data).returncode == 1


def test_serve_creates_admin_and_prints_password_once(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "IDCS_ADMIN_PASSWORD"}
    proc = subprocess.Popen([sys.executable, "-m", "idcs_core.cli", "serve", "--port", str(port), "--host",
                             "127.0.0.1", "--data-dir", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        password = None
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        while password is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if "password:" in line:
                password = line.split("password:")[1].strip()
        assert password
        for _ in range(100):
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/login", json={"username": "admin", "password": password})
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert r.json()["code"] == 200 and r.json()["data"]["is_admin"] is True
    finally:
        proc.terminate()
        proc.wait(10)
    log_files = list(tmp_path.glob("*.log"))
    assert all(password not in f.read_text() for f in log_files)
