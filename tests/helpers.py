"""Small helpers shared by the core tests."""

from __future__ import annotations

from idcs_core.testing.server import ApiClient


def create_vm(client: ApiClient, host: str, vm: str, **spec: object) -> dict:
    body = {"vm_uuid": vm, "os_name": "ubuntu-22.04", "cpu_num": 1, "ram_num": 512, "hdd_num": 10} | spec
    return client.run_task("POST", f"/api/client/create/{host}", body)
