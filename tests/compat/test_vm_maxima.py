"""The operator's per-VM maxima (settings max_vm_cpu_num / max_vm_ram_num / max_vm_hdd_num, from the
security work) apply to token calls after the profile's unit conversion: a 20480 GB disk is refused
with a clear error and nothing is created; 20480 MB from a MB profile is 20 GB and allowed."""

from __future__ import annotations

from idcs_core.testing.server import ApiClient, LiveServer

LAB_VM = {"os_name": "ubuntu-22.04", "cpu_num": 1, "mem_num": 256}


def test_20480_gb_disk_is_refused_and_nothing_is_made(server: LiveServer, admin: ApiClient, host: str) -> None:
    admin.post("/api/system/settings", {"max_vm_hdd_num": 100})  # this module's own server: no reset needed
    gb_module = server.client(admin.get("/api/token/current")["token"])            # profile openidcs: GB
    _, body = gb_module.call("POST", f"/api/client/create/{host}", LAB_VM | {"vm_uuid": "huge1", "hdd_num": 20480})
    assert body["code"] in (400, 4001) and "hdd" in body["msg"], body
    mb_module = server.client(admin.post("/api/tokens", {"name": "maxima-mb", "profile": "swapidc"})["token"])
    _, body = mb_module.call("POST", f"/api/client/create/{host}", LAB_VM | {"vm_uuid": "huge2",
                                                                              "hdd_num": 200 * 1024})
    assert body["code"] in (400, 4001) and "hdd" in body["msg"], body              # 200 GB after conversion
    for vm in ("huge1", "huge2"):
        assert admin.call("GET", f"/api/client/detail/{host}/{vm}")[1]["code"] == 1002
    made = mb_module.post(f"/api/client/create/{host}", LAB_VM | {"vm_uuid": "fits1", "hdd_num": 20480})
    assert made["vm_uuid"] == "fits1" and admin.get(f"/api/client/detail/{host}/fits1")["hdd_num"] == 20
