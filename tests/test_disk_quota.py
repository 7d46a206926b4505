"""Extra disks count against the disk quota for as long as they exist, and no longer."""

from __future__ import annotations

from typing import Any

from idcs_core.testing.server import ApiClient


def _used_hdd(client: ApiClient) -> int:
    return int(client.get("/api/users/current")["quota"]["used_hdd"])


def test_extra_disks_are_charged_released_and_recounted(admin: ApiClient, host: str, user_factory: Any) -> None:
    user = user_factory({"max_vms": 2, "max_hdd": 30, "max_cpu": 4, "max_ram": 4096})
    vm = {"os_name": "ubuntu-22.04", "cpu_num": 1, "ram_num": 512, "hdd_num": 10}
    user.run_task("POST", f"/api/client/create/{host}", {"vm_uuid": "dq1", **vm})
    user.post(f"/api/client/hdd/mount/{host}/dq1", {"hdd_name": "data", "hdd_size": 15})
    assert _used_hdd(user) == 25
    admin.post("/api/system/recalculate-quotas", {})
    assert _used_hdd(user) == 25, "the recount forgot the extra disk"
    _status, body = user.call("POST", f"/api/client/hdd/mount/{host}/dq1", {"hdd_name": "more", "hdd_size": 6})
    assert body["code"] == 4001, body  # 25 + 6 > 30

    user.run_task("DELETE", f"/api/client/delete/{host}/dq1")
    assert _used_hdd(user) == 0, "deleting the VM kept its extra disk charged"
    admin.post("/api/system/recalculate-quotas", {})
    assert _used_hdd(user) == 0
    # the whole quota is free again: a VM of 30 GB fits
    user.run_task("POST", f"/api/client/create/{host}", {"vm_uuid": "dq2", **vm, "hdd_num": 30})
    user.run_task("DELETE", f"/api/client/delete/{host}/dq2")
