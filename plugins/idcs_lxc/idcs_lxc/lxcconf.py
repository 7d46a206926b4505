"""The container's LXC config file: the block OpenIDCS manages in it, and the VM's metadata.

The engine owns one block at the end of ``<lxcpath>/<name>/config``, between two marker
lines, and rewrites only that block: CPU and memory limits, the MAC, the mounts of extra
disks and one ``# idcs-meta {json}`` line (os_name, cpu/ram/hdd, disks) the VM list reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

BEGIN = "# idcs-lxc begin (managed by OpenIDCS; rewritten on every change)"
END = "# idcs-lxc end"
META = "# idcs-meta "


@dataclass
class Meta:
    """What OpenIDCS recorded about a container."""

    os_name: str = ""
    cpu_num: int | None = None
    ram_num: int | None = None
    hdd_num: int | None = None
    hwaddr: str = ""
    disks: dict[str, int] = field(default_factory=dict)  # name -> GB, every extra disk the VM owns
    mounted: list[str] = field(default_factory=list)  # those attached now

    def to_json(self) -> str:
        return json.dumps({"os_name": self.os_name, "cpu_num": self.cpu_num, "ram_num": self.ram_num,
                           "hdd_num": self.hdd_num, "hwaddr": self.hwaddr, "disks": self.disks,
                           "mounted": self.mounted}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Meta | None:
        try:
            raw: dict[str, Any] = json.loads(text)
        except ValueError:
            return None
        return cls(os_name=str(raw.get("os_name") or ""), cpu_num=raw.get("cpu_num"), ram_num=raw.get("ram_num"),
                   hdd_num=raw.get("hdd_num"), hwaddr=str(raw.get("hwaddr") or ""),
                   disks={str(k): int(v) for k, v in (raw.get("disks") or {}).items()},
                   mounted=[str(d) for d in raw.get("mounted") or []])


def meta_of(config: str) -> Meta | None:
    """The metadata line of a config file, None for a container OpenIDCS did not make."""
    for line in config.splitlines():
        if line.startswith(META):
            return Meta.from_json(line[len(META):])
    return None


def cpuset(cpu_num: int, host_cpus: int) -> str:
    """``0`` / ``0-3``: the first ``cpu_num`` CPUs (at most the host's)."""
    count = max(1, min(cpu_num, max(host_cpus, 1)))
    return "0" if count == 1 else f"0-{count - 1}"


def limit_lines(meta: Meta, cgroup: int, host_cpus: int) -> list[str]:
    """The cgroup settings for the recorded CPU count and memory (cgroup v1 or v2 keys)."""
    lines: list[str] = []
    prefix = "lxc.cgroup2" if cgroup == 2 else "lxc.cgroup"
    if meta.cpu_num:
        lines.append(f"{prefix}.cpuset.cpus = {cpuset(meta.cpu_num, host_cpus)}")
    if meta.ram_num:
        key = "memory.max" if cgroup == 2 else "memory.limit_in_bytes"
        lines.append(f"{prefix}.{key} = {int(meta.ram_num) * 1024 * 1024}")
    return lines


def managed_block(meta: Meta, cgroup: int, host_cpus: int, disk_dir: str, vm: str) -> str:
    lines = [BEGIN, META + meta.to_json()]
    if meta.hwaddr:
        lines.append(f"lxc.net.0.hwaddr = {meta.hwaddr}")
    lines += limit_lines(meta, cgroup, host_cpus)
    for disk in meta.mounted:
        lines.append(f"lxc.mount.entry = {disk_dir}/{vm}/{disk} mnt/{disk} none bind,create=dir 0 0")
    lines.append(END)
    return "\n".join(lines) + "\n"


def without_block(config: str) -> str:
    """The config with the managed block taken out."""
    out: list[str] = []
    inside = False
    for line in config.splitlines():
        if line == BEGIN:
            inside = True
        elif line == END and inside:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out).rstrip("\n") + "\n"


def with_block(config: str, block: str) -> str:
    return without_block(config) + "\n" + block
