"""A create slower than the modules' own time-outs: the answer arrives within the profile's wait
(state ``creating``), and the module's retry makes no second VM (with and without vm_uuid)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from modules import IDCSmart, XiaoheiFS
from testlab import PASSWORD, TestLabEngine

from idcs_core.plugins import PluginRegistry
from idcs_core.testing.server import ApiClient, LiveServer

CREATE_SECONDS = 27.0  # longer than IDCSmart's 30 s minus its own work, far above xiaoheiFS's 15 s


@pytest.fixture
def slow(registry: PluginRegistry, tmp_path: Path) -> Iterator[tuple[LiveServer, ApiClient]]:
    srv = LiveServer(tmp_path, plugins=registry, host_timeout=2.0).start()
    admin = srv.admin()
    admin.post("/api/server/create", {"server_name": "slowhs", "server_type": "TestLab", "server_addr": "lab://slowhs",
                                      "server_user": "root", "server_pass": PASSWORD})
    yield srv, admin
    admin.close()
    srv.stop()


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    began = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - began


def test_slow_create_answers_in_time_and_retries_make_no_second_vm(
        slow: tuple[LiveServer, ApiClient], lab: TestLabEngine) -> None:
    srv, admin = slow
    lab.faults.delay["vm_create"] = CREATE_SECONDS
    zjmf = IDCSmart(srv.url, admin.post("/api/tokens", {"name": "zj", "profile": "idcsmart"})["token"])
    xh = XiaoheiFS(srv.url, admin.post("/api/tokens", {"name": "xh", "profile": "xiaoheifs"})["token"])
    zj_body = {"vm_uuid": "zjslow", "vm_name": "zjslow", "os_name": "ubuntu-22.04", "cpu_num": 1, "mem_num": 512,
               "hdd_num": 8192, "nic_all": {"eth0": {"nic_type": "nat", "mac_addr": "", "ip4_addr": "",
                                                       "ip6_addr": ""}}}
    xh_body = {"vm_name": "xhslow", "cpu_num": 1, "mem_num": 1024, "hdd_num": 10240, "os_name": "ubuntu-22.04",
               "nic_all": {"nic0": {"nic_type": "nat"}}}

    with ThreadPoolExecutor(2) as pool:                       # both modules at once, each with its own client
        first_zj = pool.submit(timed, zjmf.json_curl, "POST", "/api/client/create/slowhs", zj_body)
        first_xh = pool.submit(timed, xh.request, "POST", "/api/client/create/slowhs", xh_body)
        (zj, zj_took), (xhd, xh_took) = first_zj.result(), first_xh.result()

    # each answer arrives before the module's own time-out, as success with the VM still being made
    assert zj["code"] == 200 and zj["data"]["status"] == "creating" and zj_took < IDCSmart.TIMEOUT, (zj, zj_took)
    assert xhd["status"] == "creating" and xh_took < XiaoheiFS.TIMEOUT, (xhd, xh_took)
    xh_vm = xhd["vm_uuid"]
    print(f"slow create answered: idcsmart {zj_took:.1f} s, xiaoheifs {xh_took:.1f} s (engine {CREATE_SECONDS} s)")

    # the modules retry: same vm_uuid (IDCSmart) / same vm_name from the same token (xiaoheiFS)
    xh_retry, xh_retry_took = timed(xh.request, "POST", "/api/client/create/slowhs", xh_body)
    assert xh_retry["vm_uuid"] == xh_vm and xh_retry_took < XiaoheiFS.TIMEOUT
    zj_retry = zjmf.json_curl("POST", "/api/client/create/slowhs", zj_body)
    assert zj_retry["code"] == 200 and zj_retry["data"]["vm_uuid"] == "zjslow", zj_retry

    deadline = time.monotonic() + 60
    while {v["status"] for v in admin.get("/api/client/detail/slowhs")} != {"running"}:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert sorted(v["vm_uuid"] for v in admin.get("/api/client/detail/slowhs")) == sorted(["zjslow", xh_vm])
    lab.faults.delay.clear()

    # a later create of the same name from another token is a new VM (the rule is per token)
    other = XiaoheiFS(srv.url, admin.post("/api/tokens", {"name": "xh2", "profile": "xiaoheifs"})["token"])
    assert other.request("POST", "/api/client/create/slowhs", xh_body)["vm_uuid"] != xh_vm
    assert len(admin.get("/api/client/detail/slowhs")) == 3
