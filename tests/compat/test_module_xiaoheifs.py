"""xiaoheiFS plugin (automation_openidc) with a token of profile ``xiaoheifs``: each client call
replayed as http_client.go sends it, each answer decoded with the Go structs' field types."""

from __future__ import annotations

from typing import Any

from modules import DockerWorld, XiaoheiFS

# The Go structs the plugin decodes into (field -> type); encoding/json fails the whole
# call when a present field has another type (null leaves the zero value).
VM_PLAN = {"cpu_num": int, "mem_num": int, "hdd_num": int, "speed_u": int, "speed_d": int, "nat_num": int,
           "flu_num": int, "gpu_mem": int}
SERVER_CONFIG = {"server_area": str, "ports_start": int, "ports_close": int, "limits_nums": int,
                 "n_cpu_price": float, "n_mem_price": float, "n_hdd_price": float, "n_net_price": float,
                 "public_addr": [str], "server_plan": {"*": VM_PLAN}}
SERVER_INFO = {"server_name": str, "server_type": str, "server_addr": str, "status": str, "server_area": str,
               "vms_count": int, "running_vms": int, "stopped_vms": int, "cpu_usage": float, "memory_usage": float,
               "disk_usage": float, "last_check": str, "config": SERVER_CONFIG}
VM_INFO = {"vm_uuid": str, "vm_name": str, "display_name": str, "os_name": str, "cpu_num": int, "mem_num": int,
           "hdd_num": int, "gpu_num": int, "vm_flag": str, "status": str, "power_state": str, "ip_address": str,
           "created_time": str, "owner": str, "vc_pass": str, "os_pass": str}
NAT_RULE = {"rule_index": int, "wan_port": int, "lan_port": int, "lan_addr": str, "nat_tips": str}
BACKUP_INFO = {"backup_name": str, "description": str, "size_mb": int, "created_time": str, "created_by": str,
               "vm_state": str, "include_memory": bool, "compressed": bool}
BACKUP_RAW = {"backup_name": str, "backup_hint": str, "backup_path": str, "backup_time": int, "created_time": str,
              "size_mb": int, "created_by": str, "vm_state": str}
AVAILABLE_PORTS = {"host_name": str, "ports_start": int, "ports_close": int, "available_count": int,
                   "available_ports": [int]}
OS_CONFIG_ITEM = {"sys_name": str, "sys_file": str, "sys_size": str, "sys_type": str, "sys_flag": bool}
REMOTE = {"console_url": str, "terminal_url": str, "expires_at": str}


def go_decode(value: Any, shape: Any, where: str = "data") -> None:
    """Assert ``value`` decodes into the Go type ``shape`` (Go matches keys case-insensitively)."""
    if value is None:
        return
    if shape is int:
        assert isinstance(value, int) and not isinstance(value, bool), (where, value)
    elif shape is float:
        assert isinstance(value, int | float) and not isinstance(value, bool), (where, value)
    elif shape in (str, bool):
        assert isinstance(value, shape), (where, value)
    elif isinstance(shape, list):
        assert isinstance(value, list), (where, value)
        for i, item in enumerate(value):
            go_decode(item, shape[0], f"{where}[{i}]")
    elif "*" in shape:
        assert isinstance(value, dict), (where, value)
        for key, item in value.items():
            go_decode(item, shape["*"], f"{where}.{key}")
    else:
        assert isinstance(value, dict), (where, value)
        fields = {k.lower(): (k, t) for k, t in shape.items()}
        for key, item in value.items():
            if key.lower() in fields:
                go_decode(item, fields[key.lower()][1], f"{where}.{key}")


def test_xiaoheifs_plugin_functions(docker_world: DockerWorld) -> None:
    w = docker_world
    c = XiaoheiFS(w.server.url, w.token("xiaohei", "xiaoheifs"))
    hs, start, _ = w.add_host("xh", server_area="HK,Hong Kong", public_addr=["127.0.0.1", "127.0.0.2"],
                                  server_plan=[{"name": "S", "cpu": 1, "mem": 256}])

    servers = c.request("GET", "/api/server/detail")                                    # ListServers / ListAreas
    go_decode(servers, {"*": SERVER_INFO})
    info = servers[hs]
    assert info["config"]["public_addr"] == ["127.0.0.1", "127.0.0.2"] and info["server_area"] == "HK,Hong Kong"
    assert info["config"]["server_plan"]["S"]["cpu_num"] == 1 and info["config"]["server_plan"]["S"]["mem_num"] == 256

    c.request("POST", f"/api/server/plan/{hs}", {"plan_name": "M", "plan_config": {           # UpsertPlan
        "cpu_num": 2, "mem_num": 2048, "hdd_num": 20480, "speed_d": 100, "speed_u": 50, "flu_num": 102400}})
    c.request("POST", f"/api/server/plan/{hs}", {"plan_name": "M", "plan_config": {
        "cpu_num": 4, "mem_num": 4096, "hdd_num": 40960, "speed_d": 100, "speed_u": 50}})
    plans = c.request("GET", "/api/server/detail")[hs]["config"]["server_plan"]               # ListPackages
    go_decode(plans, {"*": VM_PLAN})
    assert set(plans) == {"S", "M"} and plans["M"]["cpu_num"] == 4 and plans["M"]["hdd_num"] == 40960
    assert [p["name"] for p in c.request("GET", f"/api/server/plans/{hs}")] == ["S", "M"]    # ListPlans
    c.request("DELETE", f"/api/server/plan/{hs}/M")                                            # DeletePlan
    assert set(c.request("GET", "/api/server/detail")[hs]["config"]["server_plan"]) == {"S"}

    images = c.request("GET", f"/api/client/os-images/{hs}")                                  # ListImages
    go_decode(images, {"system_maps": [OS_CONFIG_ITEM], "images_maps": [OS_CONFIG_ITEM]})
    assert w.image in [i["sys_file"] for i in images["system_maps"]]

    ports = c.request("GET", f"/api/server/ports/{hs}")                                       # GetAvailablePorts
    go_decode(ports, AVAILABLE_PORTS)
    assert ports["available_ports"][0] == start

    created = c.request("POST", f"/api/client/create/{hs}", {                                 # CreateInstance
        "vm_name": "xhvm", "cpu_num": 1, "mem_num": 1 * 1024, "hdd_num": 10 * 1024, "os_name": w.image,
        "os_pass": "Pw-xh-123456", "vc_pass": "abcd1234", "nic_all": {"nic0": {"nic_type": "nat"}}})
    vm = created["vm_uuid"]
    assert vm.startswith("xhvm-")
    assert w.admin.get(f"/api/client/detail/{hs}/{vm}")["hdd_num"] == 10                      # 10240 MB = 10 GB
    wan = c.request("GET", f"/api/server/ports/{hs}")["available_ports"][0]
    c.request("POST", f"/api/client/natadd/{hs}/{vm}", {"wan_port": wan, "lan_port": 22, "protocol": "tcp",
                                                        "nat_tips": "auto-remote-22"})

    detail = c.request("GET", f"/api/client/detail/{hs}/{vm}")                                 # GetInstance
    go_decode(detail, {"uuid": str, "config": VM_INFO})
    cfg = detail["config"]
    assert (cfg["vm_uuid"], cfg["cpu_num"], cfg["mem_num"], cfg["hdd_num"]) == (vm, 1, 1024, 10240)
    assert cfg["vm_flag"] == "STARTED" and cfg["ip_address"].count(".") == 3
    rules = c.request("GET", f"/api/client/natget/{hs}/{vm}")                                  # ListNATRules
    go_decode(rules, [NAT_RULE])
    assert [(r["wan_port"], r["lan_port"]) for r in rules] == [(wan, 22)]

    listed = c.request("GET", f"/api/client/detail/{hs}")                                      # ListVMs
    go_decode(listed, [VM_INFO])
    assert [(v["vm_uuid"], v["vm_name"]) for v in listed] == [(vm, "xhvm")] and listed[0]["ip_address"]

    for action, flag in [("H_CLOSE", "STOPPED"), ("S_START", "STARTED"), ("S_RESET", "STARTED")]:
        c.request("POST", f"/api/client/powers/{hs}/{vm}", {"action": action})                 # Start/Shutdown/Reboot
        assert c.request("GET", f"/api/client/detail/{hs}/{vm}")["config"]["vm_flag"] == flag, action

    status = c.request("GET", f"/api/client/status/{hs}/{vm}")                                 # GetMonitor
    assert isinstance(status, dict) and isinstance(status["history"], list)
    remote = c.request("GET", f"/api/client/remote/{hs}/{vm}")                                 # GetRemoteAccess
    go_decode(remote, REMOTE)
    assert remote["terminal_url"]

    c.request("PUT", f"/api/client/update/{hs}/{vm}", {"password": "Reset-Pass-9"})             # ResetPassword
    c.request("PUT", f"/api/client/update/{hs}/{vm}", {"cpu_num": 2, "mem_num": 2048})          # ElasticUpdate
    cfg = c.request("GET", f"/api/client/detail/{hs}/{vm}")["config"]
    assert (cfg["cpu_num"], cfg["mem_num"], cfg["hdd_num"]) == (2, 2048, 10240)

    c.request("POST", f"/api/client/backup/create/{hs}/{vm}", {"vm_tips": "nightly"})         # CreateBackup
    backups = c.request("GET", f"/api/client/backup/detail/{hs}/{vm}")                         # ListBackups
    go_decode(backups, [BACKUP_INFO])
    go_decode(backups, [BACKUP_RAW])                                                          # ListSnapshots
    assert len(backups) == 1 and backups[0]["created_time"].startswith("20") and backups[0]["backup_time"] > 0
    assert backups[0]["backup_hint"] == "nightly"
    name = backups[0]["backup_name"]
    c.request("POST", f"/api/client/backup/restore/{hs}/{vm}", {"backup_name": name,            # RestoreBackup
                                                                "power_on_after_restore": True})
    c.request("POST", f"/api/client/backup/restore/{hs}/{vm}", {"vm_back": name})               # RestoreSnapshot
    c.request("DELETE", f"/api/client/backup/delete/{hs}/{vm}", {"backup_name": name})          # DeleteBackup
    assert c.request("GET", f"/api/client/backup/detail/{hs}/{vm}") == []

    c.request("POST", f"/api/server/powers/{hs}", {"enable": False})                           # SetHostEnable
    assert c.request("GET", "/api/server/detail")[hs]["config"]["enabled"] is False
    c.request("POST", f"/api/server/powers/{hs}", {"enable": True})

    c.request("DELETE", f"/api/client/delete/{hs}/{vm}")                                       # DeleteVM
    assert vm not in w.containers()
