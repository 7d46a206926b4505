"""NAT host ports: which ones a normal user may forward, and automatic picks that skip taken ports."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest
from helpers import create_vm
from testlab import PASSWORD, TestLabEngine

from idcs_core.services.network import AUTO_PORT_TRIES, DEFAULT_CUSTOMER_PORTS
from idcs_core.testing.server import ApiClient, LiveServer

_names = itertools.count(1)


@pytest.fixture
def open_host(admin: ApiClient) -> Iterator[str]:
    """A TestLab host without ports_start/ports_close."""
    name = f"open{next(_names)}"
    admin.post("/api/server/create", {"server_name": name, "server_type": "TestLab", "server_addr": f"lab://{name}",
                                      "server_user": "root", "server_pass": PASSWORD})
    yield name
    admin.call("DELETE", f"/api/server/delete/{name}", params={"force": "true"})


def test_normal_user_only_forwards_customer_ports_when_the_host_sets_no_range(
        admin: ApiClient, open_host: str, user_factory: object) -> None:
    user = user_factory()  # type: ignore[operator]
    create_vm(user, open_host, "np1")
    low, high = DEFAULT_CUSTOMER_PORTS
    for port in (22, 1880, low - 1, high + 1, 65535):
        status, body = user.call("POST", f"/api/client/natadd/{open_host}/np1", {"host_port": port, "vm_port": 22})
        assert (status, body["code"]) == (400, 400), (port, body)
        assert f"{low}-{high}" in body["msg"]
    assert user.get(f"/api/client/natget/{open_host}/np1") == []
    assert user.get("/api/users/current")["quota"]["used_nat"] == 0
    for port in (low, high):
        assert user.post(f"/api/client/natadd/{open_host}/np1", {"host_port": port, "vm_port": 22})["host_port"] == port
    auto = user.post(f"/api/client/natadd/{open_host}/np1", {"wan_port": "", "lan_port": 80})
    assert auto["host_port"] == low + 1  # picked from the default customer range
    # administrators stay free to forward any port
    assert admin.post(f"/api/client/natadd/{open_host}/np1", {"host_port": 22, "vm_port": 22})["host_port"] == 22
    ports = sorted(r["host_port"] for r in user.get(f"/api/client/natget/{open_host}/np1"))
    assert ports == [22, low, low + 1, high]


def test_host_range_still_binds_normal_users(host: str, user_factory: object) -> None:
    user = user_factory()  # type: ignore[operator]
    create_vm(user, host, "np2")
    status, body = user.call("POST", f"/api/client/natadd/{host}/np2", {"host_port": 10000, "vm_port": 22})
    assert (status, body["code"]) == (400, 400) and "20000-20010" in body["msg"]


def test_auto_pick_skips_ports_taken_on_the_host(lab: TestLabEngine, host: str, user_factory: object) -> None:
    user = user_factory()  # type: ignore[operator]
    create_vm(user, host, "np3")
    lab.faults.ports_taken |= {(f"lab://{host}", p) for p in (20000, 20001, 20002)}
    rule = user.post(f"/api/client/natadd/{host}/np3", {"wan_port": 0, "lan_port": 80})
    assert rule["host_port"] == 20003
    assert [r["host_port"] for r in user.get(f"/api/client/natget/{host}/np3")] == [20003]
    assert user.get("/api/users/current")["quota"]["used_nat"] == 1
    # a port asked for by number is not replaced by another
    status, body = user.call("POST", f"/api/client/natadd/{host}/np3", {"host_port": 20001, "vm_port": 81})
    assert (status, body["code"]) == (409, 4002), body


def test_auto_pick_gives_up_after_a_bounded_number_of_tries(lab: TestLabEngine, admin: ApiClient, open_host: str,
                                                            user_factory: object) -> None:
    user = user_factory()  # type: ignore[operator]
    create_vm(user, open_host, "np4")
    low = DEFAULT_CUSTOMER_PORTS[0]
    lab.faults.ports_taken |= {(f"lab://{open_host}", p) for p in range(low, low + AUTO_PORT_TRIES + 5)}
    calls = lab.hosts[f"lab://{open_host}"].calls
    before = calls.count("nat_add")
    status, body = user.call("POST", f"/api/client/natadd/{open_host}/np4", {"wan_port": 0, "lan_port": 80})
    assert (status, body["code"]) == (409, 4002), body
    assert calls.count("nat_add") - before == AUTO_PORT_TRIES
    assert user.get(f"/api/client/natget/{open_host}/np4") == []
    assert user.get("/api/users/current")["quota"]["used_nat"] == 0


def test_the_customer_range_is_documented(server: LiveServer) -> None:
    doc = httpx.get(f"{server.url}/openapi.json").json()
    description = doc["paths"]["/api/client/natadd/{hs_name}/{vm_uuid}"]["post"]["description"]
    low, high = DEFAULT_CUSTOMER_PORTS
    assert f"{low}-{high}" in description and str(AUTO_PORT_TRIES) in description
