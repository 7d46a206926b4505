"""``GET /metrics``: Prometheus text that the official parser reads, moving as the server works,
labelled by route template, and closed to addresses outside the allow-list without the token."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from testlab import PASSWORD, TestLabEngine

from idcs_core.plugins import PluginRegistry
from idcs_core.testing.server import ApiClient, LiveServer


@pytest.fixture(scope="module")
def metrics_server(registry: PluginRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(Path(tmp_path_factory.mktemp("metrics")), plugins=registry, host_timeout=1.0).start()
    yield srv
    srv.stop()


def scrape(url: str, **kw: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = httpx.get(f"{url}/metrics", timeout=10, **kw)  # type: ignore[arg-type]
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_parse_and_move(metrics_server: LiveServer, lab: TestLabEngine) -> None:
    url = metrics_server.url
    admin: ApiClient = metrics_server.admin()
    before = scrape(url)
    for _ in range(3):
        admin.get("/api/system/engine")
    admin.post("/api/server/create", {"server_name": "mxa", "server_type": "TestLab", "server_addr": "lab://mxa",
                                      "server_user": "root", "server_pass": PASSWORD})
    admin.post("/api/server/create", {"server_name": "mxb", "server_type": "TestLab", "server_addr": "lab://mxb",
                                      "server_user": "root", "server_pass": PASSWORD})
    admin.get("/api/client/detail/mxa")
    admin.get("/api/client/detail/mxb")
    for path in ("/no/such/page", "/api/client/detail/mxa/x/y/z"):  # unmatched paths, odd methods: no new routes
        httpx.request("BREW", f"{url}{path}", timeout=5)
        httpx.get(f"{url}{path}", timeout=5)
    admin.run_task("POST", "/api/client/create/mxa", {"vm_uuid": "mx1", "os_name": "busybox", "cpu_num": 1,
                                                      "ram_num": 64, "hdd_num": 1})
    lab.faults.down.add("lab://mxb")
    time.sleep(2.1)  # the host status cache (STATUS_TTL 2 s) must expire for mxb to show down
    after = scrape(url)

    engine_calls = {"method": "GET", "route": "/api/system/engine", "status": "200"}
    assert value(after, "idcs_http_requests_total", **engine_calls) == \
        value(before, "idcs_http_requests_total", **engine_calls) + 3
    route = {"method": "GET", "route": "/api/client/detail/{hs_name}"}
    assert value(after, "idcs_http_requests_total", **route, status="200") == 2, "one series per route template"
    assert value(after, "idcs_http_request_duration_seconds_count", **route) == 2
    assert not any("mxa" in dict(labels).get("route", "") or "/no/such" in dict(labels).get("route", "")
                   for _n, labels in after), "a raw path became a label"
    assert value(after, "idcs_http_requests_total", method="GET", route="unmatched", status="404") == 2
    assert not any(dict(labels).get("method") == "BREW" for _n, labels in after), "any method became a label"

    assert value(after, "idcs_tasks_total", kind="vm_create", outcome="success") == 1
    assert value(after, "idcs_task_duration_seconds_count", kind="vm_create", outcome="success") == 1
    assert value(after, "idcs_engine_hook_duration_seconds_count", engine="TestLab", hook="vm_create",
                 outcome="ok") == 1
    assert value(after, "idcs_host_up", host="mxa", engine="TestLab") == 1
    assert ("idcs_host_up", (("engine", "TestLab"), ("host", "mxb"))) in after
    assert value(after, "idcs_host_up", host="mxb", engine="TestLab") == 0
    assert value(after, "idcs_vms", state="running") == 1
    # per VM, as the host's vm_list reports them (TestLab: 1.5 % CPU, 20 % memory)
    assert value(after, "idcs_vm_cpu_usage_percent", host="mxa", vm="mx1") == 1.5
    assert value(after, "idcs_vm_memory_usage_percent", host="mxa", vm="mx1") == 20.0

    lab.faults.down.clear()
    admin.run_task("DELETE", "/api/client/delete/mxa/mx1")
    admin.delete("/api/server/delete/mxa")
    admin.delete("/api/server/delete/mxb")
    admin.close()


def test_metrics_are_closed_outside_the_allow_list(metrics_server: LiveServer) -> None:
    url = metrics_server.url
    admin = metrics_server.admin()
    status, answer = admin.call("POST", "/api/system/settings", {"metrics_allow": "10.0.0.0/8,not-a-net"})
    assert status == 400, answer
    admin.post("/api/system/settings", {"metrics_allow": "10.0.0.0/8", "metrics_token": "scrape-Token-42"})
    try:
        shown = admin.get("/api/system/settings")["settings"]
        assert shown["metrics_token"] == "***"
        admin.post("/api/system/settings", shown)  # a settings form posted back whole keeps the token
        closed = httpx.get(f"{url}/metrics", timeout=10)
        assert closed.status_code == 403 and closed.json()["code"] == 403
        wrong = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 403
        samples = scrape(url, headers={"Authorization": "Bearer scrape-Token-42"})
        assert any(name == "idcs_http_requests_total" for name, _ in samples)
    finally:
        admin.post("/api/system/settings", {"metrics_allow": "127.0.0.1/32", "metrics_token": ""})
    assert httpx.get(f"{url}/metrics", timeout=10).status_code == 200
    admin.close()
