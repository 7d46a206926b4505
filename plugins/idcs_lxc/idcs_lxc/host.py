"""Host options (typed, with defaults) and the host's live status."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from idcs_core import errors
from idcs_core.enginekit import option_number
from idcs_core.types import HostOption, HostSpec, HostStatus, OptionType

if TYPE_CHECKING:
    from idcs_lxc.client import Session

OPTIONS: list[HostOption] = [
    HostOption("lxcpath", OptionType.STR, "/var/lib/lxc", "where the host keeps its containers (lxc-* -P)"),
    HostOption("bridge", OptionType.STR, "lxcbr0", "bridge new containers are attached to (DHCP on it, e.g. lxc-net)"),
    HostOption("image_dir", OptionType.STR, "/var/lib/idcs-lxc/images",
               "directory of rootfs tarballs (*.tar, *.tar.gz, *.tar.xz) offered as images"),
    HostOption("backup_dir", OptionType.STR, "/var/lib/idcs-lxc/backups", "where backup archives are kept"),
    HostOption("disk_dir", OptionType.STR, "/var/lib/idcs-lxc/disks", "where extra disks (directories) are kept"),
    HostOption("nft_table", OptionType.STR, "idcs_lxc", "the nftables table (family ip) holding the NAT rules"),
    HostOption("host_key", OptionType.STR, "", "SSH host key to accept ('ssh-ed25519 AAAA...'); empty: pinned on "
               "first use"),
    HostOption("known_hosts", OptionType.STR, "~/.config/idcs/lxc/known_hosts.json",
               "file where host keys pinned on first use are kept"),
    HostOption("ssh_key", OptionType.STR, "", "SSH private key (PEM/OpenSSH text or a file path) used before the "
               "password", secret=True),
    HostOption("apparmor_profile", OptionType.STR, "", "lxc.apparmor.profile of new containers (empty: the host's "
               "default.conf)"),
    HostOption("timeout", OptionType.INT, 60, "seconds one command on the host may take"),
    HostOption("connect_timeout", OptionType.INT, 5, "seconds to open the SSH connection"),
    HostOption("stop_timeout", OptionType.INT, 10, "seconds a clean stop may take before it is forced"),
]
DEFAULTS: dict[str, Any] = {o.name: o.default for o in OPTIONS}


def describe() -> dict[str, Any]:
    """What ``engine_describe`` says of the engine: title, one paragraph, homepage, typed options."""
    return {"title": "LXC containers",
            "description": "Plain LXC 5 containers (no LXD daemon) on this machine (server_addr 'local') or on "
                           "a Linux host over SSH (server_addr 'ssh://user@host[:port]', password or key, host "
                           "key pinned); NAT through an nftables table of the engine's own.",
            "homepage": "https://linuxcontainers.org/lxc/",
            "options": list(OPTIONS)}


@dataclass(frozen=True)
class Options:
    """The engine's options for one host, defaults applied."""

    lxcpath: str
    bridge: str
    image_dir: str
    backup_dir: str
    disk_dir: str
    nft_table: str
    host_key: str
    known_hosts: str
    ssh_key: str
    apparmor_profile: str
    timeout: int
    connect_timeout: int
    stop_timeout: int

    def ssh_key_text(self) -> str:
        """The private key's text (the option holds the text itself or a file path)."""
        if "PRIVATE KEY" in self.ssh_key:
            return self.ssh_key
        with open(os.path.expanduser(self.ssh_key)) as handle:
            return handle.read()


def options_of(host: HostSpec) -> Options:
    """Read ``host.options`` defensively: defaults for what is missing, a clear 400 for bad types."""
    raw = {**DEFAULTS, **{k: v for k, v in (host.options or {}).items() if k in DEFAULTS and v not in (None, "")}}
    values: dict[str, Any] = {}
    for option in OPTIONS:
        value = raw[option.name]
        if option.type == OptionType.INT:  # a stop may be forced at once; a command needs a second
            least = 0 if option.name == "stop_timeout" else 1
            values[option.name] = option_number(option.name, value, int, minimum=least)
        else:
            values[option.name] = str(value)
    for name in ("lxcpath", "image_dir", "backup_dir", "disk_dir"):
        if not values[name].startswith("/") or ".." in values[name].split("/"):
            raise errors.BadRequest(f"host option {name} must be an absolute path")
    if not values["nft_table"].replace("_", "").isalnum():
        raise errors.BadRequest("host option nft_table may hold letters, digits and _ only")
    return Options(**values)


STATUS_SCRIPT = r"""
lxc-ls --version 2>/dev/null || echo unknown
read -r l1 _ < /proc/loadavg; echo "$l1"
nproc
awk '/^MemTotal:/{t=$2} /^MemAvailable:/{a=$2} END{print t, a}' /proc/meminfo
mkdir -p "$1" && df -P "$1" | awk 'NR==2{print $2, $3}'
ls -1 "$1" 2>/dev/null | while read -r n; do [ -f "$1/$n/config" ] && echo "$n"; done | wc -l
[ -f /sys/fs/cgroup/cgroup.controllers ] && echo 2 || echo 1
"""


def facts(session: Session) -> dict[str, Any]:
    """The host's facts in one command: LXC version, load, CPUs, memory, disk, containers, cgroup."""
    result = session.run(["sh", "-c", STATUS_SCRIPT, "idcs-status", session.opts.lxcpath],
                         timeout=min(session.opts.timeout, 8))
    lines = result.out.split("\n")
    if result.code != 0 or len(lines) < 7:
        raise errors.HostUnreachable(f"the host answered its status query oddly: {result.err or result.out}"[:300])
    version = lines[0].strip()
    if version == "unknown":
        raise errors.HostUnreachable("LXC is not installed on the host (lxc-ls is missing)")
    cpus = int(lines[2])
    mem_total, mem_avail = (int(x) for x in lines[3].split())
    disk_total, disk_used = (int(x) for x in lines[4].split())
    found = {"version": version, "load": float(lines[1]), "cpus": cpus, "mem_total": mem_total,
             "mem_avail": mem_avail, "disk_total": disk_total, "disk_used": disk_used,
             "containers": int(lines[5]), "cgroup": int(lines[6])}
    session.cache.update(cpus=cpus, cgroup=found["cgroup"])
    return found


def host_status(session: Session) -> HostStatus:
    """Usage and version of the host, in one round trip."""
    f = facts(session)
    return HostStatus(
        online=True,
        cpu_usage=round(min(100.0, 100.0 * f["load"] / max(f["cpus"], 1)), 1),
        memory_usage=round(100.0 * (1 - f["mem_avail"] / f["mem_total"]), 1) if f["mem_total"] else None,
        disk_usage=round(100.0 * f["disk_used"] / f["disk_total"], 1) if f["disk_total"] else None,
        vms_count=f["containers"], version=f"LXC {f['version']}",
        extra={"cpus": f["cpus"], "cgroup": f["cgroup"], "transport": session.addr.label})


def host_cpus(session: Session) -> int:
    """How many CPUs the host has (cached after the first status)."""
    if "cpus" not in session.cache:
        facts(session)
    return int(session.cache["cpus"])


def cgroup_version(session: Session) -> int:
    if "cgroup" not in session.cache:
        facts(session)
    return int(session.cache["cgroup"])
