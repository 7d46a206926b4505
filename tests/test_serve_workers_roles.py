"""``idcs serve --workers N --no-worker --name web`` (issue 19): every one of the N processes is an
API node without an embedded worker, each with a name of its own in ``idcs cluster status``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from idcs_core.testing.databases import drop_postgres_schema, fresh_postgres_url
from idcs_core.testing.server import LiveServer


def test_workers_keep_no_worker_and_get_names_of_their_own(tmp_path_factory: pytest.TempPathFactory) -> None:
    url = fresh_postgres_url()
    folder = Path(tmp_path_factory.mktemp("roles"))
    srv = LiveServer(folder, database_url=url, subprocess_mode=True, env={"IDCS_LOAD_ENGINES": "none"},
                     serve_args=["--workers", "2", "--no-worker", "--name", "web"]).start()
    try:
        run = subprocess.run([sys.executable, "-m", "idcs_core.cli", "cluster", "status", "--json",
                              "--data-dir", str(folder), "--database-url", url],
                             capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
        assert run.returncode == 0, run.stderr
        status = json.loads(run.stdout)
        nodes = [n for n in status["nodes"] if n["role"] != "cli"]
        assert len(nodes) == 2, (status, srv.log_tail())
        assert {n["role"] for n in nodes} == {"api"}, nodes  # no embedded worker in either process
        assert len({n["name"] for n in nodes}) == 2 and all(n["name"].startswith("web-") for n in nodes), nodes
        assert status["queue"]["workers"] == 0, status
    finally:
        srv.stop()
        drop_postgres_schema(url)
