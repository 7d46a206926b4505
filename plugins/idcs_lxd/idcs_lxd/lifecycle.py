"""VM lifecycle: create, update, delete, reinstall, power, status, list.

A VM is an LXD instance named ``vm_uuid``. Limits: ``limits.cpu`` = ``cpu_num``,
``limits.memory`` = ``ram_num`` MiB, root disk ``size`` = ``hdd_num`` GiB as an
instance-level ``root`` device (enforced only by pools whose driver can, see
``storage.quota_note``). What the user asked for is kept in ``user.idcs.*`` keys.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pylxd import Client
from pylxd import exceptions as lxd_exc

from idcs_core import errors
from idcs_core.types import HostSpec, PowerAction, Progress, VMInfo, VMSpec
from idcs_lxd import guest, images, instances, replace, storage
from idcs_lxd.errors import OperationFailed
from idcs_lxd.info import KEY_OS_NAME, KEY_VM_NAME, disk_gb, parse_cpus, root_device, to_vminfo
from idcs_lxd.naming import KEY_BACKUP, KEY_VM_UUID, instance_name, is_internal, temp_name

CREATE_TIMEOUT = 900.0


def _noop(percent: int, message: str = "") -> None:
    return None


def _check_spec(spec: VMSpec) -> None:
    for label, value in (("cpu_num", spec.cpu_num), ("ram_num", spec.ram_num), ("hdd_num", spec.hdd_num)):
        if not isinstance(value, int) or value < 0:
            raise errors.BadRequest(f"{label} must be a non-negative integer, not {value!r}")


def _limits(spec: VMSpec) -> dict[str, str]:
    config: dict[str, str] = {}
    if spec.cpu_num:
        config["limits.cpu"] = str(spec.cpu_num)
    if spec.ram_num:
        config["limits.memory"] = f"{spec.ram_num}MiB"
    return config


def _root(pool: str, hdd_num: int | None) -> dict[str, str]:
    device = {"type": "disk", "path": "/", "pool": pool}
    if hdd_num:
        device["size"] = f"{hdd_num}GiB"
    return device


# ------------------------------------------------------------------ CPU usage sampling


class CpuSampler:
    """CPU percent of instances from two readings of their cumulative ``cpu.usage`` (ns).

    Keeps the last reading per (host, instance); the first look at an instance
    takes a second reading ``probe`` seconds later when asked to.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def percent(self, key: tuple[str, str], usage_ns: int | None, cpus: int) -> float | None:
        if usage_ns is None:
            return None
        now = time.monotonic()
        with self._lock:
            previous = self._last.get(key)
            self._last[key] = (now, usage_ns)
        if previous is None or now - previous[0] < 0.05 or now - previous[0] > 600 or usage_ns < previous[1]:
            return None
        busy = (usage_ns - previous[1]) / ((now - previous[0]) * 1e9 * max(cpus, 1))
        return round(min(100.0, busy * 100), 2)

    def has(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return key in self._last


def _cpus(inst: dict[str, Any], client: Client) -> int:
    config = inst.get("expanded_config") or inst.get("config") or {}
    count = parse_cpus(config.get("limits.cpu"))
    if count:
        return count
    try:
        return int(client.resources["cpu"]["total"])
    except Exception:
        return 1


def _host_memory(client: Client) -> int | None:
    try:
        return int(client.resources["memory"]["total"])
    except Exception:
        return None


def _extra_for(client: Client, inst: dict[str, Any], drivers: dict[str, str]) -> dict[str, Any]:
    pool = root_device(inst).get("pool")
    if not pool:
        return {}
    if pool not in drivers:
        try:
            drivers[pool] = storage.pool_driver(client, pool)
        except lxd_exc.LXDAPIException:
            drivers[pool] = ""
    return storage.quota_note(drivers[pool])


def info_of(client: Client, host: HostSpec, sampler: CpuSampler, vm_uuid: str, *,
            probe: bool = True) -> VMInfo:
    """The VM as it is now (record + state), with CPU percent from the sampler."""
    name = instance_name(vm_uuid)
    inst = instances.get(client, name)
    state = instances.state(client, name)
    key, cpus = (host.addr, name), _cpus(inst, client)
    running = state.get("status") in ("Running", "Frozen")
    cpu = sampler.percent(key, (state.get("cpu") or {}).get("usage"), cpus) if running else None
    if running and cpu is None and probe:
        time.sleep(0.25)
        cpu = sampler.percent(key, (instances.state(client, name).get("cpu") or {}).get("usage"), cpus)
    return to_vminfo(inst, state, cpu_usage=cpu, host_memory=_host_memory(client),
                     extra=_extra_for(client, inst, {}))


def vm_list(client: Client, host: HostSpec, sampler: CpuSampler) -> list[VMInfo]:
    """Every instance, with state, in one API call (``recursion=2``).

    The engine's helper instances (``naming.is_internal``: a reinstall's new system
    before it is swapped in, a holder of old backups...) are not VMs: never listed,
    so a scan never imports them."""
    drivers: dict[str, str] = {}
    memory = _host_memory(client)
    found = []
    for inst in instances.list_all(client, recursion=2):
        if is_internal(inst["name"]):
            continue
        state = inst.get("state") or {}
        cpu = None
        if state.get("status") in ("Running", "Frozen"):
            cpu = sampler.percent((host.addr, inst["name"]), (state.get("cpu") or {}).get("usage"),
                                  _cpus(inst, client))
        found.append(to_vminfo(inst, state, cpu_usage=cpu, host_memory=memory,
                               extra=_extra_for(client, inst, drivers)))
    return found


# ------------------------------------------------------------------ create / update / delete


def _instance_body(client: Client, host: HostSpec, spec: VMSpec, image: images.ResolvedImage,
                   name: str, *, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The POST body creating ``name`` from ``image`` with the spec's limits (``base``: an
    instance record whose profiles, config and devices are kept, for reinstall)."""
    if base is not None:
        profiles = list(base.get("profiles") or [])
        # backups (snapshots) stay with the old instance: so do their records
        config = {k: v for k, v in (base.get("config") or {}).items()
                  if not k.startswith(("volatile.", "image.", KEY_BACKUP))}
        devices = dict(base.get("devices") or {})
        pool = (devices.get("root") or {}).get("pool") or storage.default_pool(client, host, profiles)
    else:
        profiles = storage.profile_names(host)
        config, devices = {}, {}
        pool = storage.default_pool(client, host, profiles)
    if not pool:
        raise errors.VMCreateFailed("the host has no storage pool: initialise LXD first (lxd init)")
    config.update(_limits(spec))
    config[KEY_VM_UUID] = spec.vm_uuid
    config[KEY_OS_NAME] = spec.os_name
    if spec.vm_name:
        config[KEY_VM_NAME] = spec.vm_name
    devices["root"] = {**(devices.get("root") or {}), **_root(pool, spec.hdd_num)}
    body: dict[str, Any] = {
        "name": name,
        "source": {"type": "image", "fingerprint": image.fingerprint},
        "type": image.type,
        "profiles": profiles,
        "config": config,
        "devices": devices,
    }
    if spec.vm_name:
        body["description"] = spec.vm_name[:255]
    return body


def _set_initial_password(client: Client, spec: VMSpec) -> dict[str, Any]:
    password = spec.config.get("os_pass")
    if not password:
        return {}
    try:
        guest.set_password(client, spec.vm_uuid, "root", str(password))
    except errors.IDCSError as exc:
        return {"os_pass_applied": False, "os_pass_error": exc.msg}
    return {"os_pass_applied": True}


def vm_create(client: Client, host: HostSpec, spec: VMSpec, sampler: CpuSampler,
              progress: Progress = _noop) -> VMInfo:
    name = instance_name(spec.vm_uuid)
    _check_spec(spec)
    if instances.exists(client, name):
        raise errors.Conflict(f"an instance named {name} already exists on host {host.name}")
    image = images.resolve(client, spec.os_name)
    body = _instance_body(client, host, spec, image, name)
    progress(10, f"creating {name} from {image.alias or image.fingerprint[:12]}")
    created = False
    try:
        try:
            instances.create(client, body, timeout=CREATE_TIMEOUT)
        except lxd_exc.Conflict:
            raise errors.Conflict(f"an instance named {name} already exists on host {host.name}") from None
        created = True
        progress(70, f"starting {name}")
        instances.set_state(client, name, "start")
        progress(90, "applying settings")
        extra = _set_initial_password(client, spec)
    except errors.Conflict:
        raise
    except (lxd_exc.LXDAPIException, OperationFailed, errors.IDCSError) as exc:
        if created:
            _cleanup(client, name)
        text = exc.msg if isinstance(exc, errors.IDCSError) else instances.lxd_error(exc)
        raise errors.VMCreateFailed(f"creating {name} failed: {text}") from exc
    except BaseException:
        if created:
            _cleanup(client, name)
        raise
    progress(100, "created")
    result = info_of(client, host, sampler, spec.vm_uuid, probe=False)
    result.extra.update(extra)
    return result


def _cleanup(client: Client, name: str) -> None:
    try:
        instances.delete(client, name)
    except Exception:  # the original error matters more
        pass


def vm_update(client: Client, host: HostSpec, spec: VMSpec, sampler: CpuSampler,
              progress: Progress = _noop) -> VMInfo:
    name = instance_name(spec.vm_uuid)
    _check_spec(spec)
    inst = instances.get(client, name)
    current_gb = disk_gb(inst)
    if spec.hdd_num and current_gb and spec.hdd_num < current_gb:
        raise errors.BadRequest(f"the disk of {name} cannot shrink from {current_gb} GB to {spec.hdd_num} GB")
    progress(20, "applying limits")

    def change(body: dict[str, Any]) -> None:
        body["config"].update(_limits(spec))
        if not spec.cpu_num:
            body["config"].pop("limits.cpu", None)
        if not spec.ram_num:
            body["config"].pop("limits.memory", None)
        if spec.vm_name:
            body["config"][KEY_VM_NAME] = spec.vm_name
            body["description"] = spec.vm_name[:255]
        if spec.hdd_num and spec.hdd_num != current_gb:
            root = dict(body["devices"].get("root") or root_device(inst) or {"type": "disk", "path": "/"})
            root.setdefault("pool", storage.default_pool(client, host, body.get("profiles")))
            root["size"] = f"{spec.hdd_num}GiB"
            body["devices"]["root"] = root

    instances.modify(client, name, change)
    progress(100, "updated")
    return info_of(client, host, sampler, spec.vm_uuid, probe=False)


def vm_delete(client: Client, vm_uuid: str, progress: Progress = _noop) -> None:
    name = instance_name(vm_uuid)
    progress(10, f"stopping and deleting {name}")
    instances.delete(client, name)
    progress(60, "deleting the instances holding its earlier backups")
    replace.remove_helpers(client, name)
    progress(80, "deleting its disks")
    storage.delete_volumes(client, name)
    progress(100, "deleted")


def vm_reinstall(client: Client, host: HostSpec, spec: VMSpec, sampler: CpuSampler,
                 progress: Progress = _noop) -> VMInfo:
    """Rebuild from a new image, keeping name, profiles, config (limits) and devices.

    The new system is made under a temporary name first, then swapped in
    (``replace.swap_in``): a bad image or a failed swap leaves the VM as it was. The
    old instance is kept, hidden, when it holds snapshots, so the VM's backups
    survive the reinstall and stay restorable.
    """
    name = instance_name(spec.vm_uuid)
    _check_spec(spec)
    old = instances.get(client, name)
    image = images.resolve(client, spec.os_name)
    if image.type != old.get("type", "container"):
        raise errors.BadRequest(
            f"image {spec.os_name} is a {image.type} image, {name} is a {old.get('type')}")
    if spec.hdd_num is None or spec.hdd_num == 0:
        spec.hdd_num = disk_gb(old) or 0
    tmp = temp_name(name, "new")
    instances.delete(client, tmp)
    progress(10, f"creating the new system from {image.alias or image.fingerprint[:12]}")
    try:
        body = _instance_body(client, host, spec, image, tmp, base=old)
        instances.create(client, body, timeout=CREATE_TIMEOUT)
        progress(60, "replacing the old system")
        kept = replace.swap_in(client, name, tmp, spec.vm_uuid,
                               was_running=old.get("status") in ("Running", "Frozen"))
    except (lxd_exc.LXDAPIException, OperationFailed) as exc:
        _cleanup(client, tmp)
        raise errors.VMOperationFailed(f"reinstalling {name} failed, the VM is unchanged: "
                                       f"{instances.lxd_error(exc)}") from exc
    except BaseException:
        _cleanup(client, tmp)
        raise
    progress(80, f"starting {name}")
    instances.set_state(client, name, "start")
    extra = _set_initial_password(client, spec)
    progress(100, "reinstalled")
    result = info_of(client, host, sampler, spec.vm_uuid, probe=False)
    result.extra.update(extra)
    result.extra["backups_kept"] = kept
    return result


# ------------------------------------------------------------------ power


def vm_power(client: Client, host: HostSpec, vm_uuid: str, action: PowerAction,
             sampler: CpuSampler) -> VMInfo:
    name = instance_name(vm_uuid)
    stop_timeout = int(host.options.get("stop_timeout", instances.STATE_TIMEOUT))
    current = instances.status(client, name)
    action = PowerAction(action)
    if action == PowerAction.START:
        if current == "Frozen":
            instances.set_state(client, name, "unfreeze")
        elif current != "Running":
            instances.set_state(client, name, "start")
    elif action == PowerAction.HARD_OFF:
        instances.stop(client, name, force=True)
    elif action == PowerAction.STOP:
        if current != "Stopped":
            try:
                instances.stop(client, name, force=False, timeout=stop_timeout)
            except (lxd_exc.LXDAPIException, OperationFailed):
                if instances.status(client, name) != "Stopped":  # the guest ignored the request
                    instances.stop(client, name, force=True)
    elif action == PowerAction.RESET:
        if current == "Stopped":
            instances.set_state(client, name, "start")
        else:
            if current == "Frozen":
                instances.set_state(client, name, "unfreeze")
            try:
                instances.set_state(client, name, "restart", force=False, timeout=stop_timeout)
            except (lxd_exc.LXDAPIException, OperationFailed):
                instances.set_state(client, name, "restart", force=True)
    elif action == PowerAction.PAUSE:
        if current == "Stopped":
            raise errors.VMOperationFailed(f"{name} is stopped: only a running VM can be paused")
        if current != "Frozen":
            instances.set_state(client, name, "freeze")
    elif action == PowerAction.RESUME:
        if current == "Stopped":  # nothing to resume: leave it running, as after any resume
            instances.set_state(client, name, "start")
        elif current == "Frozen":
            # pylxd has no unfreeze on LXD 5.0: the state action works on both daemons.
            instances.set_state(client, name, "unfreeze")
    else:  # pragma: no cover - PowerAction is closed
        raise errors.NotSupported(f"power action {action} is not supported")
    return info_of(client, host, sampler, vm_uuid, probe=False)

