"""Issue 10, as an operator runs it (``idcs serve --self-signed --access-log`` in a process of
its own): HSTS over TLS, no ``token=`` value in the access log, no forged lines in the server
log, and the SQLite files readable by the owner only."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from idcs_core.testing.server import LiveServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("sec-serve"), subprocess_mode=True, tls=True,
                     serve_args=["--access-log"]).start()
    yield srv
    srv.stop()


def test_hsts_over_tls(served: LiveServer) -> None:
    r = httpx.get(f"{served.url}/docs", verify=False)
    assert r.headers["strict-transport-security"].startswith("max-age="), r.headers
    assert r.headers["x-frame-options"] == "DENY"


def test_tokens_in_urls_are_masked_in_the_access_log(served: LiveServer) -> None:
    secret = "eyJzZWNyZXQtdGVtcC10b2tlbg.sec.sig"
    r = httpx.get(f"{served.url}/api/client/templogin", params={"token": secret}, verify=False)
    assert r.status_code == 401, r.text
    httpx.get(f"{served.url}/health", verify=False)  # a later line: the first one is written by now
    log = served.log_path.read_text(errors="replace")
    assert "/api/client/templogin?token=***" in log, log[-2000:]
    assert secret not in log


def test_a_forged_user_name_cannot_start_a_log_line(served: LiveServer) -> None:
    forged = "ghost\n2026-01-01 00:00:00,000 INFO idcs: admin ok"
    r = httpx.post(f"{served.url}/login", json={"username": forged, "password": "x"}, verify=False)
    assert r.json()["code"] == 2002
    lines = served.log_path.read_text(errors="replace").splitlines()
    assert not any(line.startswith("2026-01-01 00:00:00,000") for line in lines), lines[-20:]
    assert "ghost" not in "\n".join(lines)  # unknown names are not logged at all


def test_the_sqlite_files_are_private(served: LiveServer) -> None:
    files = [p for p in Path(served.data_dir).iterdir() if p.name.startswith("idcs.db")]
    assert {p.name for p in files} >= {"idcs.db"}, files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))
