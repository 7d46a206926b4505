"""Traffic counters and bandwidth caps of LXD / Incus instances.

Counters: one ``GET /1.0/instances?recursion=2`` per host (every instance with its state);
``state.network.<nic>.counters`` are the instance's own bytes received and sent (loopback left
out). The ``epoch`` is the instance's init PID, which changes at every start.

Caps: the NIC devices' ``limits.egress`` (what the instance sends: ``speed_u``) and
``limits.ingress`` (what it receives: ``speed_d``), applied live by LXD with ``tc`` on the
host-side interface. A NIC that comes from a profile is copied into the instance's own devices
with the limits added, so the profile (shared by other instances) is never changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from pylxd import Client

from idcs_core import errors
from idcs_core.types import TrafficCounters
from idcs_lxd import instances, naming

LIMIT_KEYS = {"limits.egress": 0, "limits.ingress": 1}  # -> index in (up, down)


def counters(client: Client, vm_uuids: list[str]) -> dict[str, TrafficCounters]:
    """The counters of the running instances among ``vm_uuids``, from one API call."""
    wanted = {naming.instance_name(v): v for v in vm_uuids}
    found: dict[str, TrafficCounters] = {}
    for inst in instances.list_all(client, recursion=2):
        vm_uuid = wanted.get(inst.get("name", ""))
        state = inst.get("state") or {}
        if vm_uuid is None or inst.get("status") != "Running" or not state:
            continue
        rx = tx = 0
        for nic, data in (state.get("network") or {}).items():
            if nic == "lo" or (data or {}).get("type") == "loopback":
                continue
            c = (data or {}).get("counters") or {}
            rx += int(c.get("bytes_received") or 0)
            tx += int(c.get("bytes_sent") or 0)
        found[vm_uuid] = TrafficCounters(rx_bytes=rx, tx_bytes=tx, epoch=f"pid:{state.get('pid', '')}")
    return found


def _set_limits(client: Client, name: str, nics: dict[str, dict[str, Any]], up_mbit: int, down_mbit: int) -> None:
    values = (up_mbit, down_mbit)

    def change(body: dict[str, Any]) -> None:
        devices = body.setdefault("devices", {})
        for dev, conf in nics.items():
            own = dict(devices.get(dev) or conf)  # a profile's NIC becomes the instance's own
            for key, index in LIMIT_KEYS.items():
                if values[index]:
                    own[key] = f"{values[index]}Mbit"
                else:
                    own.pop(key, None)
            if dev in devices or own != conf:
                devices[dev] = own

    instances.modify(client, name, change)


def _shape_inside(pid: int, nic_names: list[str], mbit: int) -> None:
    """A ``tbf`` on the instance's own NICs (what it sends), from the host in its network namespace."""
    tc = shutil.which("tc", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    nsenter = shutil.which("nsenter", path=os.environ.get("PATH", "") + ":/usr/bin:/usr/sbin")
    if not tc or not nsenter:
        raise errors.NotSupported("capping what the instance sends here needs tc and nsenter on the host")
    inside = [nsenter, "-t", str(pid), "-n", tc]
    for nic in nic_names:
        subprocess.run([*inside, "qdisc", "del", "dev", nic, "root"], capture_output=True, check=False, timeout=15)
        if mbit:
            burst = str(max(16 * 1024, int(mbit * 1_000_000 / 8 * 0.02)))
            done = subprocess.run([*inside, "qdisc", "replace", "dev", nic, "root", "tbf", "rate", f"{mbit}mbit",
                                   "burst", burst, "latency", "100ms"], capture_output=True, text=True,
                                  check=False, timeout=15)
            if done.returncode != 0:
                raise errors.VMOperationFailed(f"tc on {nic} of the instance: {done.stderr.strip()}")


def apply_caps(client: Client, vm_uuid: str, up_mbit: int, down_mbit: int, local: bool) -> None:
    """Set (or, for 0, remove) ``limits.egress`` / ``limits.ingress`` on every NIC of the instance.

    LXD caps what an instance sends with a policing filter, which needs the kernel's ``act_police``
    module. Where the host lacks it and the daemon is this machine (``local``), the instance gets
    ``limits.ingress`` from LXD and a token-bucket shaper on its own NICs for what it sends
    (applied again by the core after a restart, when the counters' epoch changes)."""
    if up_mbit < 0 or down_mbit < 0:
        raise errors.BadRequest("speed_u and speed_d must not be negative")
    name = naming.instance_name(vm_uuid)
    inst = instances.get(client, name)
    nics = {dev: dict(conf) for dev, conf in (inst.get("expanded_devices") or {}).items() if conf.get("type") == "nic"}
    if not nics:
        raise errors.NotSupported(f"instance {name} has no network interface to cap")
    try:
        _set_limits(client, name, nics, up_mbit, down_mbit)
        police_missing = False
    except Exception as exc:
        police_missing = up_mbit > 0 and any(word in str(exc) for word in ("action module", "police"))
        if not police_missing or not local:
            raise
        _set_limits(client, name, nics, 0, down_mbit)
    if local and inst.get("status") == "Running":
        pid = int((instances.state(client, name) or {}).get("pid") or 0)
        if pid > 0 and (police_missing or up_mbit == 0):
            _shape_inside(pid, [conf.get("name") or dev for dev, conf in nics.items()],
                          up_mbit if police_missing else 0)
