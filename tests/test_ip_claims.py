"""Customers cannot claim addresses: only administrators choose them, and never one already given."""

from __future__ import annotations

from typing import Any

from helpers import create_vm

from idcs_core.testing.server import ApiClient


def test_only_admins_choose_addresses_and_never_twice(admin: ApiClient, host: str, user_factory: Any) -> None:
    user = user_factory({"max_vms": 2, "max_ips": 5, "max_cpu": 4, "max_ram": 4096, "max_hdd": 50})
    create_vm(user, host, "ipc1")
    create_vm(admin, host, "ipc2")
    path = f"/api/client/ipaddr/create/{host}"

    for chosen in ({"ip4_addr": "203.0.113.7"}, {"ip6_addr": "2001:db8::7"}, {"mac_addr": "02:00:00:00:00:07"}):
        status, body = user.call("POST", f"{path}/ipc1", {"nic_type": "pub", **chosen})
        assert (status, body["code"]) == (403, 403), body
    assert [ip for ip in user.get(f"/api/client/ipaddr/detail/{host}/ipc1") if ip["managed"]] == []
    assert user.get("/api/users/current")["quota"]["used_ips"] == 0

    assigned = user.post(f"{path}/ipc1", {"nic_type": "nat"})  # the host picks: allowed
    assert assigned["address"]
    given = admin.post(f"{path}/ipc1", {"nic_type": "pub", "ip4_addr": "203.0.113.7"})
    assert given["address"] == "203.0.113.7"
    status, body = admin.call("POST", f"{path}/ipc2", {"nic_type": "pub", "ip4_addr": "203.0.113.7"})
    assert body["code"] == 4002 and "already given" in body["msg"], body
    assert [ip for ip in admin.get(f"/api/client/ipaddr/detail/{host}/ipc2") if ip["managed"]] == []
