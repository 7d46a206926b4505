"""``power_on_after_restore`` as billing modules send it: true/false, 1/0, "1"/"0", "true"/"false"."""

from __future__ import annotations

import pytest
from helpers import create_vm

from idcs_core.testing.server import ApiClient


@pytest.mark.parametrize("value,running", [(True, True), ("1", True), (1, True), ("true", True),
                                           (False, False), ("0", False), (0, False)])
def test_power_on_after_restore_values(admin: ApiClient, host: str, value: object, running: bool) -> None:
    create_vm(admin, host, "rp1")
    admin.post(f"/api/client/powers/{host}/rp1", {"action": "H_CLOSE"})
    started = admin.run_task("POST", f"/api/client/backup/create/{host}/rp1", {})
    name = started["result"]["backup_name"] if "result" in started else None
    name = name or admin.get(f"/api/client/backup/detail/{host}/rp1")[0]["backup_name"]
    admin.run_task("POST", f"/api/client/backup/restore/{host}/rp1",
                   {"backup_name": name, "power_on_after_restore": value})
    status = admin.get(f"/api/client/detail/{host}/rp1")["status"]
    assert status == ("running" if running else "stopped"), (value, status)
    admin.run_task("DELETE", f"/api/client/delete/{host}/rp1")


def test_power_on_after_restore_rejects_other_words(admin: ApiClient, host: str) -> None:
    create_vm(admin, host, "rp2")
    status, body = admin.call("POST", f"/api/client/backup/restore/{host}/rp2",
                              {"backup_name": "x", "power_on_after_restore": "maybe"})
    assert (status, body["code"]) == (400, 400) and "power_on_after_restore" in body["msg"], body
    admin.run_task("DELETE", f"/api/client/delete/{host}/rp2")
