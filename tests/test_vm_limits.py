"""Per-VM limits (billing dialect) are set by administrators only."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import create_vm

from idcs_core.services.vms import ADMIN_LIMITS
from idcs_core.testing.server import ApiClient

VALUES: dict[str, Any] = {"cpu_per": 100, "gpu_num": 8, "gpu_mem": 65536, "speed_u": 10000, "speed_d": 10000,
                          "flu_num": 10**6, "nat_num": 100, "web_num": 100, "nic_all": {"eth9": {"nic_type": "pub"}}}
BASE = {"os_name": "busybox", "cpu_num": 1, "ram_num": 128, "hdd_num": 1}


def test_every_limit_has_a_sample() -> None:
    assert set(VALUES) == set(ADMIN_LIMITS)


@pytest.mark.parametrize("key", ADMIN_LIMITS)
def test_normal_user_cannot_create_with_a_limit(host: str, user_factory: object, key: str) -> None:
    user = user_factory()  # type: ignore[operator]
    status, body = user.call("POST", f"/api/client/create/{host}", BASE | {"vm_uuid": "lim0", key: VALUES[key]})
    assert (status, body["code"]) == (403, 403) and key in body["msg"], body
    assert user.get(f"/api/client/detail/{host}") == []
    assert user.get("/api/users/current")["quota"]["used_vms"] == 0


def test_normal_user_cannot_change_limits(admin: ApiClient, host: str, user_factory: object) -> None:
    user = user_factory()  # type: ignore[operator]
    create_vm(user, host, "lim1", **BASE)
    admin.run_task("PUT", f"/api/client/update/{host}/lim1", {"nat_num": 1})
    before = user.get(f"/api/client/detail/{host}/lim1")
    assert before["config"]["nat_num"] == 1
    for key in ADMIN_LIMITS:
        for body in ({key: VALUES[key]}, {key: VALUES[key], "cpu_num": 2},
                     {key: VALUES[key], "password": "Secret-123"},
                     {key: VALUES[key], "os_name": "busybox", "os_pass": "Secret-123"}):
            status, answer = user.call("PUT", f"/api/client/update/{host}/lim1", body)
            assert (status, answer["code"]) == (403, 403) and key in answer["msg"], (body, answer)
    after = user.get(f"/api/client/detail/{host}/lim1")
    assert (after["config"], after["cpu_num"]) == (before["config"], 1)
    assert user.get("/api/users/current")["quota"]["used_cpu"] == 1
    # the limit the admin set holds: one NAT rule, not two
    user.post(f"/api/client/natadd/{host}/lim1", {"host_port": 0, "vm_port": 22})
    status, answer = user.call("POST", f"/api/client/natadd/{host}/lim1", {"host_port": 0, "vm_port": 80})
    assert (status, answer["code"]) == (403, 4001), answer
    # what is not a limit stays the owner's to change
    user.run_task("PUT", f"/api/client/update/{host}/lim1", {"cpu_num": 2, "vm_name": "mine"})


def test_admin_sets_limits_on_create_and_update(admin: ApiClient, host: str, user_factory: object) -> None:
    user = user_factory()  # type: ignore[operator]
    owner_id = user.get("/api/users/current")["id"]
    limits = {k: VALUES[k] for k in ADMIN_LIMITS if k != "nic_all"}
    create_vm(admin, host, "lim2", **BASE, owner_id=owner_id, **limits)
    assert {k: v for k, v in user.get(f"/api/client/detail/{host}/lim2")["config"].items() if k in limits} == limits
    admin.run_task("PUT", f"/api/client/update/{host}/lim2", {"speed_u": 5, "nic_all": VALUES["nic_all"]})
    config = user.get(f"/api/client/detail/{host}/lim2")["config"]
    assert config["speed_u"] == 5 and set(config["nic_all"]) == {"eth9"}
