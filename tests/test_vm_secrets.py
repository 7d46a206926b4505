"""Initial passwords given at creation reach the engine and are kept nowhere else."""

from __future__ import annotations

from testlab import TestLabEngine

from idcs_core.testing.server import ApiClient


def test_os_and_console_passwords_reach_the_engine_only(admin: ApiClient, host: str, lab: TestLabEngine) -> None:
    started = admin.post(f"/api/client/create/{host}", {
        "vm_uuid": "sec1", "os_name": "ubuntu-22.04", "cpu_num": 1, "ram_num": 512, "hdd_num": 1,
        "os_pass": "Root-Initial-9", "vc_pass": "Vnc-Initial-9", "vc_port": 5901})
    task = admin.wait_task(started["task_id"])
    assert task["state"] == "success", task
    config = lab.hosts[f"lab://{host}"].vms["sec1"].spec.config
    assert (config["os_pass"], config["vc_pass"], config["vc_port"]) == ("Root-Initial-9", "Vnc-Initial-9", 5901)
    detail = admin.get(f"/api/client/detail/{host}/sec1")
    assert detail["config"]["vc_pass_set"] is True and detail["config"]["os_pass_set"] is True
    seen = str(detail) + str(admin.get(f"/api/tasks/{started['task_id']}")) + str(admin.get("/api/tasks")) + \
        str(admin.get("/api/system/logger/detail", params={"limit": 50}))
    assert "Initial-9" not in seen
    admin.run_task("DELETE", f"/api/client/delete/{host}/sec1")
