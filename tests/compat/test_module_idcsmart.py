"""ZJMF / IDCSmart module (idcserver.php) with a token of profile ``idcsmart``: every function
replayed as the module sends it, asserting on the fields the module reads."""

from __future__ import annotations

import time
from urllib.parse import parse_qsl

import httpx
from modules import DockerWorld, IDCSmart


def create_body(vm: str, image: str, network_mode: str = "mode1") -> dict:
    """idcserver_CreateAccount's body with the module's defaults (disk "8192MB", traffic 100 GB)."""
    nic_type = "nat" if network_mode in ("mode1", "mode2", "mode3", "mode4") else "bridge"
    return {"vm_uuid": vm, "vm_name": vm, "os_name": image, "os_pass": "Pw-0123456789ab", "vc_port": 23456,
            "vc_pass": "Pw-0123456789ab", "cpu_num": 1, "cpu_per": 50, "gpu_num": 0, "gpu_mem": 0,
            "mem_num": 256, "hdd_num": 8192, "speed_u": 100, "speed_d": 100, "flu_num": 100 * 1024,
            "nat_num": 5, "web_num": 1,
            "nic_all": {"eth0": {"nic_type": nic_type, "mac_addr": "02:1a:2b:3c:4d:5e", "ip4_addr": "",
                                 "ip6_addr": ""}},
            "hdd_all": [], "iso_all": [], "nat_all": [], "web_all": [], "backups": [], "own_all": ["admin"]}


def vm_status(m: IDCSmart, hs: str, vm: str) -> str:
    """idcserver_Status / idcserver_vnc: data[0].vm_status of a list of samples."""
    res = m.curl("GET", f"/api/client/status/{hs}/{vm}")
    assert res["code"] == 200, res
    assert isinstance(res["data"], list) and res["data"], res
    return res["data"][0]["vm_status"].upper()


def test_idcsmart_module_functions(docker_world: DockerWorld) -> None:
    w = docker_world
    m = IDCSmart(w.server.url, w.token("zjmf", "idcsmart"))
    hs, start, close = w.add_host("zj")
    vm = "zjvm1"

    assert m.curl("GET", "/api/system/statis")["code"] == 200                         # TestLink

    created = m.json_curl("POST", f"/api/client/create/{hs}", create_body(vm, w.image))   # CreateAccount
    assert created["code"] == 200, created
    contract = w.admin.get(f"/api/client/detail/{hs}/{vm}")
    assert contract["hdd_num"] == 8 and contract["ram_num"] == 256                      # 8192 "MB" is 8 GB
    assert contract["config"]["flu_num"] == 100                                         # GB x 1024 -> 100 GB

    sync = m.curl("GET", f"/api/client/detail/{hs}/{vm}")                                 # Sync / getContainerIPs
    assert sync["code"] == 200 and sync["data"]["config"]["vc_port"] == 23456
    assert sync["data"]["config"]["nic_all"]["eth0"]["nic_type"] == "nat"

    assert vm_status(m, hs, vm) in ("RUNNING", "STARTED")                                # Status: on
    for action, expected in [("H_CLOSE", "STOPPED"), ("S_START", "RUNNING"), ("S_PAUSE", "PAUSED"),
                             ("S_START", "RUNNING"), ("S_RESET", "RUNNING")]:          # Off / On / Suspend / ...
        res = m.json_curl("POST", f"/api/client/powers/{hs}/{vm}", {"action": action})
        assert res["code"] == 200, (action, res)
        assert vm_status(m, hs, vm) == expected, action

    remote = m.curl("GET", f"/api/client/remote/{hs}/{vm}")                               # vnc: data.url
    assert remote["code"] == 200 and remote["data"]["url"].startswith("https://"), remote

    info = m.curl("GET", f"/api/client/detail/{hs}/{vm}?_t={int(time.time())}")["data"]    # getinfoall / getstats
    assert info["hostname"] == vm and info["status"] == "running"
    assert info["ipv4"] and info["ipv4"].count(".") == 3
    assert "ipv6" in info
    assert info["config"]["cpus"] == 1 and info["config"]["memory"] == "256 MB"
    assert info["config"]["disk"] == "8192 MB" and info["config"]["traffic_limit"] == 100 * 1024
    for key in ("cpu_usage", "memory_usage", "disk_usage", "traffic_usage", "cpu_percent", "memory_percent",
                "disk_percent"):
        assert key in info, key
    assert info["used"] == 0                                                            # gettraffic: data.used

    rules = []
    for lan in (22, 80, 443, 8080, 3306):                                               # natadd x5 (nat_limit 5)
        res = m.json_curl("POST", f"/api/client/natadd/{hs}/{vm}", {
            "lan_port": lan, "wan_port": 0, "lan_addr": "", "wan_addr": "", "protocol": "tcp", "port_tips": "t"})
        assert res["code"] == 200, res
    listed = m.curl("GET", f"/api/client/natget/{hs}/{vm}?_t={int(time.time())}")["data"]
    keys = {(r["external_port"], r["internal_port"], r["external_port_end"], r["internal_port_end"])
            for r in listed}                                                            # getNATRuleCount's key
    assert len(keys) == 5 and all(start <= r["external_port"] <= close for r in listed)
    rules = sorted(listed, key=lambda r: r["rule_index"])
    assert [r["sport"] for r in rules] == [22, 80, 443, 8080, 3306]

    check = m.curl("GET", f"/api/nat/check?hostname={vm}&protocol=tcp&port={rules[0]['external_port']}")
    assert check["code"] == 200 and check["data"]["available"] is False                # natcheck
    assert m.curl("DELETE", f"/api/client/natdel/{hs}/{vm}/{rules[0]['rule_index']}")["code"] == 200
    assert len(m.curl("GET", f"/api/client/natget/{hs}/{vm}")["data"]) == 4

    res = m.json_curl("POST", f"/api/client/password/{hs}/{vm}", {"password": "New-Pass-42"})  # CrackPassword
    assert res["code"] == 200, res

    reset = m.curl("POST", f"/api/traffic/reset?hostname={vm}")                         # TrafficReset
    assert reset["code"] == 200, reset

    temp = m.curl("GET", f"/api/client/temptoken/{hs}/{vm}")                            # OpenIDCManage
    assert temp["code"] == 200 and temp["data"]["expire"] > time.time()
    browser = httpx.Client(base_url=w.server.url, verify=False)
    landing = browser.get(f"/api/client/templogin?token={temp['data']['temp_token']}")
    assert landing.status_code == 303 and landing.headers["location"].startswith("/#")  # a page, never JSON
    fragment = dict(parse_qsl(landing.headers["location"].partition("#")[2]))
    assert (fragment["hs"], fragment["vm"]) == (hs, vm) and fragment["temp"]

    assert m.curl("DELETE", f"/api/client/delete/{hs}/{vm}")["code"] == 200             # TerminateAccount
    assert vm not in w.containers()


def test_idcsmart_bridge_network_mode_is_refused_clearly(docker_world: DockerWorld) -> None:
    """Network modes 5-7 send nic_type "bridge": Docker has no own-address NICs, so 1006 and no VM."""
    w = docker_world
    m = IDCSmart(w.server.url, w.token("zjmf-bridge", "idcsmart"))
    hs, _, _ = w.add_host("zjb")
    res = m.json_curl("POST", f"/api/client/create/{hs}", create_body("zjbridge", w.image, "mode5"))
    assert res["code"] == 1006 and "bridge" in res["msg"], res
    assert m.curl("GET", f"/api/client/detail/{hs}/zjbridge")["code"] == 1002
    assert "zjbridge" not in w.containers()
