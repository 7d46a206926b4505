"""Presenters of the client profiles: how a token's profile reads requests and shapes answers.

Services return the contract's data; for a caller with a profile (an API token), the
request is converted before validation (``inbound``: units, so every limit applies to
the converted value) and the answer after the handler (``outbound``), by the functions
registered here for that route. A route without a presenter answers the same to every
caller. Each presenter only adds or converts what its module reads (recorded as facts
in ``tests/compat``), so the contract's fields stay beside them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from idcs_core.profiles import MB_PER_GB, Profile, get_profile, mb_to_gb
from idcs_core.services.plans import plan_items

Inbound = Callable[[Profile, dict[str, Any]], dict[str, Any]]
Outbound = Callable[[Profile, Any], Any]

_IN: dict[tuple[str, str], Inbound] = {}
_OUT: dict[tuple[str, str], list[tuple[tuple[str, ...], Outbound]]] = {}
MB_PROFILES = ("idcsmart", "swapidc", "xiaoheifs")


def inbound(method: str, path: str) -> Callable[[Inbound], Inbound]:
    def register(fn: Inbound) -> Inbound:
        _IN[(method, path)] = fn
        return fn
    return register


def outbound(method: str, path: str, profiles: tuple[str, ...]) -> Callable[[Outbound], Outbound]:
    def register(fn: Outbound) -> Outbound:
        _OUT.setdefault((method, path), []).append((profiles, fn))
        return fn
    return register


def read_request(profile_name: str | None, method: str, path: str, raw: dict[str, Any]) -> dict[str, Any]:
    profile = get_profile(profile_name)
    fn = _IN.get((method, path))
    return fn(profile, raw) if profile is not None and fn is not None else raw


def shape_answer(profile_name: str | None, method: str, path: str, data: Any) -> Any:
    profile = get_profile(profile_name)
    if profile is None:
        return data
    for profiles, fn in _OUT.get((method, path), []):
        if profile.name in profiles:
            data = fn(profile, data)
    return data


# ---------------------------------------------------------------------- units


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _units_in(profile: Profile, fields: dict[str, Any]) -> dict[str, Any]:
    """hdd_num / flu_num from the module's unit to GB (non-numbers are left to validation)."""
    fields = dict(fields)
    for key, in_mb in (("hdd_num", profile.hdd_in_mb), ("flu_num", profile.flu_in_mb)):
        number = _number(fields.get(key))
        if in_mb and number is not None and number >= 0:
            fields[key] = mb_to_gb(number)
    return fields


def _units_out(profile: Profile, fields: dict[str, Any]) -> dict[str, Any]:
    fields = dict(fields)
    if profile.hdd_in_mb and isinstance(fields.get("hdd_num"), int):
        fields["hdd_num"] = fields["hdd_num"] * MB_PER_GB
    config = fields.get("config")
    if profile.flu_in_mb and isinstance(config, dict) and isinstance(config.get("flu_num"), int):
        fields["config"] = config | {"flu_num": config["flu_num"] * MB_PER_GB}
    return fields


@inbound("POST", "/api/client/create/{hs_name}")
@inbound("PUT", "/api/client/update/{hs_name}/{vm_uuid}")
def _vm_in(profile: Profile, raw: dict[str, Any]) -> dict[str, Any]:
    return _units_in(profile, raw)


@inbound("POST", "/api/server/plan/{hs_name}")
def _plan_in(profile: Profile, raw: dict[str, Any]) -> dict[str, Any]:
    if isinstance(raw.get("plan_config"), dict):
        return raw | {"plan_config": _units_in(profile, raw["plan_config"])}
    return raw


# ---------------------------------------------------------------------- VMs

POWER_WORDS = {"running": ("RUNNING", "STARTED"), "stopped": ("STOPPED", "STOPPED"),
               "paused": ("PAUSED", "SUSPEND"), "creating": ("CREATING", "UNKNOWN"),
               "deleting": ("DELETING", "UNKNOWN")}


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC).isoformat() if value.tzinfo is None else value.isoformat()
    return str(value or "")


def _addresses(vm: dict[str, Any]) -> tuple[str, str]:
    ips = [str(a.get("address", "")) if isinstance(a, dict) else str(a) for a in vm.get("ip_addresses") or []]
    v4 = next((ip for ip in ips if "." in ip), "")
    v6 = next((ip for ip in ips if ":" in ip), "")
    return v4, v6


def _xiaoheifs_vm(vm: dict[str, Any]) -> dict[str, Any]:
    """The VMConfig fields the plugin reads (vm_flag, ip_address, created_time, MB units)."""
    return {"vm_uuid": vm.get("vm_uuid"), "vm_name": vm.get("vm_name"), "display_name": vm.get("vm_name"),
            "os_name": vm.get("os_name"), "cpu_num": vm.get("cpu_num"), "mem_num": vm.get("ram_num"),
            "hdd_num": vm.get("hdd_num"), "vm_flag": POWER_WORDS.get(str(vm.get("status")), ("", "UNKNOWN"))[1],
            "ip_address": _addresses(vm)[0], "created_time": _iso(vm.get("created_at"))}


@outbound("GET", "/api/client/detail/{hs_name}", MB_PROFILES)
def _vm_list_units(profile: Profile, data: Any) -> Any:
    items = [_units_out(profile, vm) for vm in data]
    if profile.name == "xiaoheifs":
        items = [vm | _xiaoheifs_vm(vm) for vm in items]
    return items


@outbound("GET", "/api/client/detail/{hs_name}/{vm_uuid}", MB_PROFILES)
def _vm_units(profile: Profile, data: Any) -> Any:
    return _units_out(profile, data)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


@outbound("GET", "/api/client/detail/{hs_name}/{vm_uuid}", ("idcsmart",))
def _idcsmart_detail(profile: Profile, vm: Any) -> Any:
    """What the client area's getinfoall/getstats/gettraffic read (data.config.cpus, ipv4, used...)."""
    v4, v6 = _addresses(vm)
    ram_mb = int(vm.get("ram_num") or 0)
    hdd_mb = int(vm.get("hdd_num") or 0)  # already MB for this profile
    traffic = int(vm.get("traffic_bytes") or 0)
    mem_percent = float(vm.get("memory_usage") or 0)  # engines report memory use in percent
    mem_used = ram_mb * 1024 * 1024 * mem_percent / 100
    config = dict(vm.get("config") or {})
    limit_mb = config.get("flu_num")
    return vm | {
        "hostname": vm.get("vm_uuid"), "ipv4": v4, "ipv6": v6, "type": "container",
        "memory": ram_mb, "disk": hdd_mb,
        "cpu_usage": vm.get("cpu_usage") or 0, "cpu_percent": vm.get("cpu_usage") or 0,
        "memory_usage": _size(mem_used), "memory_usage_raw": int(mem_used), "memory_percent": mem_percent,
        "disk_usage": _size(0), "disk_usage_raw": 0, "disk_percent": 0,
        "traffic_usage": _size(traffic), "traffic_usage_raw": traffic, "used": traffic,
        "config": config | {"cpus": vm.get("cpu_num"), "memory": f"{ram_mb} MB", "disk": f"{hdd_mb} MB",
                            "traffic_limit": limit_mb or 0},
    }


@outbound("GET", "/api/client/detail/{hs_name}/{vm_uuid}", ("xiaoheifs",))
def _xiaoheifs_detail(profile: Profile, vm: Any) -> Any:
    """GetVM decodes the VM from data.config (VMConfig), and uuid beside it."""
    return vm | _xiaoheifs_vm(vm) | {"uuid": vm.get("vm_uuid"),
                                     "config": dict(vm.get("config") or {}) | _xiaoheifs_vm(vm)}


@outbound("POST", "/api/client/create/{hs_name}", MB_PROFILES)
@outbound("PUT", "/api/client/update/{hs_name}/{vm_uuid}", MB_PROFILES)
def _task_units(profile: Profile, data: Any) -> Any:
    return _units_out(profile, data) if isinstance(data, dict) and "hdd_num" in data else data


@outbound("GET", "/api/client/status/{hs_name}/{vm_uuid}", ("idcsmart",))
def _idcsmart_status(profile: Profile, data: Any) -> Any:
    """Status and vnc read data[0].vm_status: a list of status samples, newest first."""
    word = POWER_WORDS.get(str(data.get("status")), ("UNKNOWN", ""))[0]
    return [{k: v for k, v in data.items() if k != "history"} | {"vm_status": word}]


@outbound("GET", "/api/client/remote/{hs_name}/{vm_uuid}", ("idcsmart",))
def _idcsmart_remote(profile: Profile, data: Any) -> Any:
    return data | {"url": data.get("console_url") or data.get("terminal_url") or ""}


@outbound("GET", "/api/client/natget/{hs_name}/{vm_uuid}", ("idcsmart",))
def _idcsmart_nat(profile: Profile, rules: Any) -> Any:
    """getNATRuleCount keys rules by external_port/internal_port (dport/sport) and *_end."""
    return [r | {"external_port": r["host_port"], "internal_port": r["vm_port"], "dport": r["host_port"],
                 "sport": r["vm_port"], "external_port_end": 0, "internal_port_end": 0, "dtype": r["protocol"]}
            for r in rules]


@outbound("GET", "/api/client/backup/detail/{hs_name}/{vm_uuid}", (*MB_PROFILES, "openidcs"))
def _backup_times(profile: Profile, backups: Any) -> Any:
    """created_time (string) and backup_time (epoch seconds), as the modules read them."""
    out = []
    for b in backups:
        created = b.get("created_at")
        epoch = int(created.replace(tzinfo=UTC).timestamp()) if isinstance(created, datetime) else 0
        out.append(b | {"created_time": _iso(created), "backup_time": epoch, "backup_hint": b.get("description"),
                        "size_mb": int((b.get("size_bytes") or 0) // (1024 * 1024))})
    return out


# ---------------------------------------------------------------------- hosts


def _plan_mb(p: dict[str, Any]) -> dict[str, Any]:
    def num(*keys: str) -> int:
        for key in keys:
            value = _number(p.get(key))
            if value is not None:
                return value
        return 0
    return {"cpu_num": num("cpu_num", "cpu"), "mem_num": num("mem_num", "ram_num", "mem"),
            "hdd_num": num("hdd_num", "hdd") * MB_PER_GB, "speed_u": num("speed_u"), "speed_d": num("speed_d"),
            "nat_num": num("nat_num"), "flu_num": num("flu_num") * MB_PER_GB, "gpu_mem": num("gpu_mem")}


def _xiaoheifs_host(host: dict[str, Any]) -> dict[str, Any]:
    config = dict(host.get("config") or {})
    addr = config.get("public_addr")
    config["public_addr"] = [a.strip() for a in str(addr or "").split(",") if a.strip()]
    config["server_plan"] = {str(p.get("name") or f"plan{i}"): _plan_mb(p)
                             for i, p in enumerate(plan_items(config.get("server_plan")))}
    return host | {"config": config}


@outbound("GET", "/api/server/detail", ("xiaoheifs",))
def _xiaoheifs_hosts(profile: Profile, hosts: Any) -> Any:
    """public_addr as a list of strings and server_plan keyed by plan name, or the list fails."""
    if isinstance(hosts, dict):
        return {name: _xiaoheifs_host(h) for name, h in hosts.items()}
    return [_xiaoheifs_host(h) for h in hosts]


@outbound("GET", "/api/server/detail/{hs_name}", ("xiaoheifs",))
@outbound("GET", "/api/server/status/{hs_name}", ("xiaoheifs",))
def _xiaoheifs_one_host(profile: Profile, host: Any) -> Any:
    return _xiaoheifs_host(host)


@outbound("GET", "/api/server/plans/{hs_name}", ("xiaoheifs",))
def _xiaoheifs_plans(profile: Profile, plans: Any) -> Any:
    out = []
    for p in plans:
        mb = _plan_mb(p)
        out.append(p | {"id": str(p.get("name", "")), "cpu": mb["cpu_num"], "memory_gb": mb["mem_num"] // MB_PER_GB,
                        "disk_gb": mb["hdd_num"] // MB_PER_GB, "bandwidth_mbps": max(mb["speed_u"], mb["speed_d"]),
                        "traffic_gb": mb["flu_num"] // MB_PER_GB})
    return out


@outbound("GET", "/api/client/os-images/{hs_name}", ("xiaoheifs",))
def _xiaoheifs_images(profile: Profile, grouped: Any) -> Any:
    """ListImages reads system_maps (system templates) and images_maps (ISOs) as OSConfig lists."""
    system: list[dict[str, Any]] = []
    isos: list[dict[str, Any]] = []
    for family, images in grouped.items():
        for image in images:
            item = {"sys_name": image["name"], "sys_file": image["file"], "sys_size": "0",
                    "sys_type": "WinNT" if "win" in family.lower() else "Linux", "sys_flag": True}
            (isos if image.get("kind") == "iso" else system).append(item)
    return grouped | {"system_maps": system, "images_maps": isos}
