"""What an operator gets from ``pip install idcs-core idcs-oci`` (wheels, no extras, no repository).

The wheels are built from this checkout (after ``scripts/build-web.sh`` and ``build-panel.sh``, as
the test command runs them) into a fresh virtualenv outside the repository. Nothing optional comes
with them: procrastinate (the ``cluster`` extra) is absent, so the server must start and serve on
SQLite without it; the wheel carries the migrations, the panel and the console pages' vendor files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from idcs_core.testing.backends import free_port, log_tail, start_process, stop_pid
from idcs_core.testing.server import ADMIN_PASSWORD

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheels")
    wheels = work / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT),
                    str(ROOT / "plugins" / "idcs_oci")], check=True, cwd=work)
    env = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    subprocess.run([str(env / "bin" / "pip"), "install", "-q", *map(str, sorted(wheels.glob("*.whl")))],
                   check=True, cwd=work)  # cwd outside the checkout: nothing is imported from it
    return env


def test_the_wheels_list_only_their_engine_and_leave_the_cluster_extra_out(venv: Path) -> None:
    out = subprocess.run([str(venv / "bin" / "idcs"), "plugins", "--json"], check=True, capture_output=True,
                         text=True, cwd=venv).stdout
    engines = {e["name"] for e in json.loads(out) if e["kind"] == "engine"}
    assert engines == {"OCInterface"}, out
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import procrastinate"], capture_output=True, cwd=venv)
    assert probe.returncode != 0, "procrastinate is an extra (cluster), not a dependency"


def test_the_installed_server_serves_api_panel_and_console_assets_on_sqlite(venv: Path, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDCS_")} | {"IDCS_ADMIN_PASSWORD": ADMIN_PASSWORD}
    proc = start_process([str(venv / "bin" / "idcs"), "serve", "--host", "127.0.0.1", "--port", str(port),
                          "--data-dir", str(tmp_path / "data")], log, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            for _ in range(300):
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None, f"idcs serve exited with {proc.returncode}:\n{log_tail(log)}"
                time.sleep(0.1)
            token = http.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD}).json()["data"]["token"]
            engines = http.get("/api/system/engine", headers={"Authorization": f"Bearer {token}"}).json()
            assert engines["code"] == 200 and engines["data"] == ["OCInterface"], engines
            panel = http.get("/")
            assert panel.status_code == 200 and "<script" in panel.text
            scripts = [p.split('"')[0] for p in panel.text.split('src="')[1:]]
            assert scripts and all(http.get(s).status_code == 200 for s in scripts), scripts
            assert http.get("/docs").status_code == 200
    finally:
        stop_pid(proc.pid, proc=proc)
    assert "Traceback" not in log.read_text(), log_tail(log)
