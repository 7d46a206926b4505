"""SwapIDC module (openidc.php) with a token of profile ``swapidc``: every function replayed as the
module sends it; ``code === 200`` (an integer) is all it reads, so the tests check what the
functions did on Docker."""

from __future__ import annotations

from modules import DockerWorld, SwapIDC


def vm_data(w: DockerWorld, username: str, os_pass: str, cpu: int, mem: int, hdd: int) -> dict:
    """openidc_build_vm_data with every product option filled (hdd and mem in MB, traffic in GB)."""
    return {"vm_uuid": username, "vm_name": "cust.example.com", "os_pass": os_pass, "os_name": w.image,
            "cpu_num": cpu, "mem_num": mem, "hdd_num": hdd, "speed_u": 10, "speed_d": 20, "nat_num": 10,
            "web_num": 10, "flu_num": 500, "dns1": "8.8.8.8", "dns2": "8.8.4.4",
            "nic_all": {"ethernet0": {"nic_type": "nat", "ip4_addr": "", "ip6_addr": ""}},
            "bak_num": 1, "iso_num": 1, "pci_num": 0, "usb_num": 0, "dat_num": 10, "dat_all": 0}


def in_container(w: DockerWorld, vm: str, command: str) -> str:
    result = w.docker.containers.get(vm).exec_run(["sh", "-c", command])
    return result.output.decode()


def test_swapidc_module_functions(docker_world: DockerWorld) -> None:
    w = docker_world
    m = SwapIDC(w.server.url, w.token("swapidc", "swapidc"))
    hs, _, _ = w.add_host("sw")
    vm = "swuser1"

    assert m.request("GET", "/api/server/status")["code"] == 200                            # TestConnection

    res = m.request("POST", f"/api/client/create/{hs}", vm_data(w, vm, "Rnd!Pass#001", 1, 256, 20480))
    assert res["code"] == 200, res                                                          # CreateAccount
    contract = w.admin.get(f"/api/client/detail/{hs}/{vm}")
    assert (contract["hdd_num"], contract["ram_num"]) == (20, 256)                          # 20480 MB = 20 GB
    assert contract["config"]["flu_num"] == 500                                             # GB, as sent

    assert m.request("POST", f"/api/client/powers/{hs}/{vm}", {"action": "stop"})["code"] == 200   # Suspend
    assert w.admin.get(f"/api/client/detail/{hs}/{vm}")["status"] == "stopped"
    assert m.request("POST", f"/api/client/powers/{hs}/{vm}", {"action": "start"})["code"] == 200  # Unsuspend
    assert w.admin.get(f"/api/client/detail/{hs}/{vm}")["status"] == "running"

    assert m.request("POST", f"/api/client/password/{hs}/{vm}", {"password": "Chosen-Pass-7"})["code"] == 200

    in_container(w, vm, "echo customer-data > /tmp/keep")
    package = vm_data(w, vm, "Rnd!Pass#002", 2, 512, 30720)                                 # ChangePackage
    del package["vm_uuid"]
    res = m.request("PUT", f"/api/client/update/{hs}/{vm}", package)
    assert res["code"] == 200, res
    after = w.admin.get(f"/api/client/detail/{hs}/{vm}")
    assert (after["cpu_num"], after["ram_num"], after["hdd_num"]) == (2, 512, 30)
    assert in_container(w, vm, "cat /tmp/keep").strip() == "customer-data"                 # not reinstalled
    audit = w.admin.get("/api/system/logger/detail", params={"limit": 50})
    mine = [e["action"] for e in audit if vm in str(e["target"])]
    assert "vm.update" in mine and "vm.reinstall" not in mine

    temp = m.request("GET", f"/api/client/temptoken/{hs}/{vm}")                              # ClientArea
    assert temp["code"] == 200 and isinstance(temp["data"]["temp_token"], str)
    landing = m.http.get("/api/client/templogin", params={"token": temp["data"]["temp_token"]})
    assert landing.status_code == 303 and landing.headers["location"].startswith("/#temp=")

    assert m.request("DELETE", f"/api/client/delete/{hs}/{vm}")["code"] == 200               # TerminateAccount
    assert vm not in w.containers()
