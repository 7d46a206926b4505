"""Containers: create, update, delete, reinstall, power, status, list (one command for all)."""

from __future__ import annotations

import logging

from idcs_core import errors
from idcs_core.types import PowerAction, Progress, VMInfo, VMSpec, VMStatus
from idcs_lxc import guest, images, lxcconf, naming, network
from idcs_lxc.client import Session
from idcs_lxc.host import cgroup_version, host_cpus
from idcs_lxc.lxcconf import Meta

log = logging.getLogger("idcs.lxc")

STATES = {"RUNNING": VMStatus.RUNNING, "STOPPED": VMStatus.STOPPED, "FROZEN": VMStatus.PAUSED,
          "FREEZING": VMStatus.PAUSED, "THAWED": VMStatus.RUNNING, "STARTING": VMStatus.RUNNING,
          "STOPPING": VMStatus.STOPPED, "ABORTING": VMStatus.STOPPED}
SEP = "@@idcs-meta@@"

# One command lists every container: lxc-ls for states, PIDs, memory and addresses, then each
# config's metadata line. $1 = lxcpath.
LIST_SCRIPT = r"""
[ -d "$1" ] || exit 0
lxc-ls -P "$1" -f -F NAME,STATE,PID,RAM,IPV4 || exit 1
echo "@@idcs-meta@@"
cd "$1" && for c in */config; do
  [ -f "$c" ] || continue
  m=$(grep -m1 '^# idcs-meta ' "$c")
  printf '%s\t%s\n' "${c%/config}" "${m#\# idcs-meta }"
done
exit 0
"""

# One container's state, addresses and metadata. $1 = lxcpath, $2 = name.
STATUS_SCRIPT = r"""
[ -f "$1/$2/config" ] || { echo missing; exit 0; }
lxc-info -P "$1" -n "$2" -sH
lxc-info -P "$1" -n "$2" -iH | tr '\n' ' '; echo
m=$(grep -m1 '^# idcs-meta ' "$1/$2/config"); echo "${m#\# idcs-meta }"
"""


def _ram_mb(text: str) -> float | None:
    """lxc-ls's RAM column (``0.72MB``, ``1.20GB``, ``-``) in MB."""
    units = {"KB": 1 / 1024, "KIB": 1 / 1024, "MB": 1.0, "MIB": 1.0, "GB": 1024.0, "GIB": 1024.0}
    for unit, factor in units.items():
        if text.upper().endswith(unit):
            try:
                return float(text[: -len(unit)]) * factor
            except ValueError:
                return None
    return None


def _info(name: str, state: str, ips: list[str], meta: Meta | None, ram_used: float | None = None) -> VMInfo:
    status = STATES.get(state.upper(), VMStatus.STOPPED)
    info = VMInfo(vm_uuid=name, status=str(status), power_state=state.upper(), ref=name,
                  ip_addresses=[ip for ip in ips if ip and ip != "-"])
    if meta is not None:
        info.os_name = meta.os_name or None
        info.cpu_num, info.ram_num, info.hdd_num = meta.cpu_num, meta.ram_num, meta.hdd_num
        info.extra = {"disks": dict(meta.disks), "mounted": list(meta.mounted)}
        if ram_used is not None and meta.ram_num:
            info.memory_usage = round(min(100.0, 100.0 * ram_used / meta.ram_num), 1)
    return info


def vm_list(session: Session) -> list[VMInfo]:
    """Every container on the host in one remote command."""
    result = session.check(["sh", "-c", LIST_SCRIPT, "idcs-list", session.opts.lxcpath], "list containers")
    table, _, metas = result.out.partition(SEP)
    meta_by_name: dict[str, Meta | None] = {}
    for line in metas.strip().splitlines():
        name, _, text = line.partition("\t")
        meta_by_name[name] = Meta.from_json(text) if text else None
    infos: list[VMInfo] = []
    for line in table.strip().splitlines()[1:]:  # the first line is the header
        fields = line.split(None, 4)
        if len(fields) < 2:
            continue
        name, state = fields[0], fields[1]
        ram = _ram_mb(fields[3]) if len(fields) > 3 else None
        ips = [ip.strip() for ip in fields[4].split(",")] if len(fields) > 4 else []
        infos.append(_info(name, state, ips, meta_by_name.get(name), ram))
    return infos


def read_status(session: Session, name: str) -> VMInfo:
    """One container's live state; ``VMNotFound`` if it is not on the host."""
    result = session.check(["sh", "-c", STATUS_SCRIPT, "idcs-status", session.opts.lxcpath, name],
                           f"status of {name}")
    lines = result.out.split("\n")
    if lines[0].strip() == "missing":
        raise errors.VMNotFound(f"container {name} is not on the host")
    state = lines[0].strip() or "STOPPED"
    ips = lines[1].split() if len(lines) > 1 else []
    meta = Meta.from_json(lines[2]) if len(lines) > 2 and lines[2].strip() else None
    return _info(name, state, ips, meta)


def exists(session: Session, name: str) -> bool:
    return session.run(["test", "-f", f"{session.opts.lxcpath}/{name}/config"]).code == 0


def read_config(session: Session, name: str) -> str:
    result = session.run(["cat", f"{session.opts.lxcpath}/{name}/config"])
    if result.code != 0:
        raise errors.VMNotFound(f"container {name} is not on the host")
    return result.out


def read_meta(session: Session, name: str) -> Meta:
    return lxcconf.meta_of(read_config(session, name)) or Meta()


def write_meta(session: Session, name: str, meta: Meta) -> None:
    """Rewrite the managed block of the container's config from ``meta``."""
    config = read_config(session, name)
    block = lxcconf.managed_block(meta, cgroup_version(session), host_cpus(session), session.opts.disk_dir, name)
    session.write_file(f"{session.opts.lxcpath}/{name}/config", lxcconf.with_block(config, block).encode(),
                       f"write the config of {name}")


def apply_limits_live(session: Session, name: str, meta: Meta) -> None:
    """Set the running container's cgroup limits to ``meta`` (lxc-cgroup)."""
    keys = {"cpuset.cpus": lxcconf.cpuset(meta.cpu_num, host_cpus(session)) if meta.cpu_num else None}
    if meta.ram_num:
        key = "memory.max" if cgroup_version(session) == 2 else "memory.limit_in_bytes"
        keys[key] = str(int(meta.ram_num) * 1024 * 1024)
    for key, value in keys.items():
        if value is not None:
            session.check(session.lxc("lxc-cgroup", "-n", name, key, value), f"set {key} of {name}")


def _net_conf(session: Session, hwaddr: str) -> str:
    lines = ["lxc.net.0.type = veth", f"lxc.net.0.link = {session.opts.bridge}", "lxc.net.0.flags = up",
             f"lxc.net.0.hwaddr = {hwaddr}"]
    if session.opts.apparmor_profile:
        lines.append(f"lxc.apparmor.profile = {session.opts.apparmor_profile}")
    return "\n".join(lines) + "\n"


def _make_rootfs(session: Session, name: str, spec: VMSpec, meta: Meta, progress: Progress) -> None:
    """lxc-create from the spec's source, then the managed block. Removes the container on failure."""
    source = images.resolve(session, spec.os_name)
    conf = f"{session.opts.lxcpath}/.idcs-{name}.conf"
    session.write_file(conf, _net_conf(session, meta.hwaddr).encode(), "write the network config")
    try:
        progress(20, f"creating {name} from {spec.os_name}")
        if source.kind == "tarball":
            session.check(session.lxc("lxc-create", "-n", name, "-f", conf, "-t", "none"), f"lxc-create {name}")
            root = f"{session.opts.lxcpath}/{name}/rootfs"
            session.check(["mkdir", "-p", root], f"make the rootfs of {name}")
            progress(40, f"unpacking {spec.os_name}")
            session.check(["tar", "-xpf", source.path, "-C", root, "--numeric-owner"], f"unpack {spec.os_name}",
                          timeout=max(session.opts.timeout, 300))
            extra = session.run(["cat", f"{source.path.split('.tar')[0]}.conf"])
            config = read_config(session, name) + f"lxc.rootfs.path = dir:{root}\nlxc.uts.name = {name}\n"
            if extra.code == 0:
                config += extra.out.rstrip("\n") + "\n"
            session.write_file(f"{session.opts.lxcpath}/{name}/config", config.encode(), f"write the config of {name}")
        else:
            session.check(session.lxc("lxc-create", "-n", name, "-f", conf, "-t", source.template, "--",
                                      *source.args), f"lxc-create {name}", timeout=max(session.opts.timeout, 600))
        progress(60, "applying limits")
        write_meta(session, name, meta)
    except BaseException:
        session.run(session.lxc("lxc-destroy", "-f", "-n", name))
        raise
    finally:
        session.run(["rm", "-f", conf])


def vm_create(session: Session, spec: VMSpec, progress: Progress) -> VMInfo:
    """Create and start the container ``spec.vm_uuid``; nothing is left behind on failure."""
    name = naming.container_name(spec.vm_uuid)
    if exists(session, name):
        raise errors.Conflict(f"a container named {name} already exists on the host")
    meta = Meta(os_name=spec.os_name, cpu_num=spec.cpu_num, ram_num=spec.ram_num, hdd_num=spec.hdd_num,
                hwaddr=naming.hwaddr(name))
    _make_rootfs(session, name, spec, meta, progress)
    try:
        progress(80, f"starting {name}")
        start(session, name)
        password = (spec.config or {}).get("os_pass")
        if password:
            try:
                guest.set_password(session, name, "root", str(password))
            except errors.VMOperationFailed as exc:
                log.info("initial password of %s not set: %s", name, exc.msg)
    except BaseException:
        destroy(session, name)
        raise
    progress(100, "created")
    return read_status(session, name)


def vm_update(session: Session, spec: VMSpec, progress: Progress) -> VMInfo:
    """New CPU/RAM/disk figures: written to the config and applied live to a running container."""
    name = naming.container_name(spec.vm_uuid, spec.ref)
    meta = read_meta(session, name)
    meta.cpu_num, meta.ram_num = spec.cpu_num or meta.cpu_num, spec.ram_num or meta.ram_num
    meta.hdd_num = spec.hdd_num or meta.hdd_num
    meta.hwaddr = meta.hwaddr or naming.hwaddr(name)
    progress(30, "writing limits")
    write_meta(session, name, meta)
    if read_status(session, name).status == VMStatus.RUNNING:
        progress(60, "applying limits to the running container")
        apply_limits_live(session, name, meta)
    return read_status(session, name)


def destroy(session: Session, name: str) -> None:
    """Stop (forced) and destroy the container; a missing one is fine."""
    if not exists(session, name):
        return
    session.run(session.lxc("lxc-unfreeze", "-n", name))
    session.run(session.lxc("lxc-stop", "-k", "-n", name))
    session.check(session.lxc("lxc-destroy", "-f", "-n", name), f"lxc-destroy {name}")


def vm_delete(session: Session, name: str, progress: Progress) -> None:
    """Destroy the container, its NAT rules and its extra disks. Idempotent."""
    progress(20, f"removing the NAT rules of {name}")
    network.remove_vm_rules(session, name)
    progress(40, f"destroying {name}")
    destroy(session, name)
    session.run(["rm", "-rf", "--one-file-system", f"{session.opts.disk_dir}/{name}"])
    progress(100, "deleted")


def vm_reinstall(session: Session, spec: VMSpec, progress: Progress) -> VMInfo:
    """A fresh root file system from ``spec.os_name``; limits, MAC, disks and NAT rules are kept."""
    name = naming.container_name(spec.vm_uuid, spec.ref)
    old = read_meta(session, name)
    meta = Meta(os_name=spec.os_name, cpu_num=spec.cpu_num or old.cpu_num, ram_num=spec.ram_num or old.ram_num,
                hdd_num=spec.hdd_num or old.hdd_num, hwaddr=old.hwaddr or naming.hwaddr(name),
                disks=old.disks, mounted=old.mounted)
    images.resolve(session, spec.os_name)  # an unknown image changes nothing
    progress(10, f"destroying the old root file system of {name}")
    destroy(session, name)
    _make_rootfs(session, name, spec, meta, progress)
    progress(80, f"starting {name}")
    start(session, name)
    network.repoint(session, name)
    progress(100, "reinstalled")
    return read_status(session, name)


def start(session: Session, name: str) -> None:
    state = read_status(session, name).power_state
    if state in ("FROZEN", "FREEZING"):
        session.check(session.lxc("lxc-unfreeze", "-n", name), f"unfreeze {name}")
    elif state != "RUNNING":
        # lxc-start -d returns once the container runs (or failed to start): no lxc-wait needed
        session.check(session.lxc("lxc-start", "-d", "-n", name), f"lxc-start {name}")


def stop(session: Session, name: str, force: bool) -> None:
    state = read_status(session, name).power_state
    if state == "STOPPED":
        return
    if state in ("FROZEN", "FREEZING"):
        session.run(session.lxc("lxc-unfreeze", "-n", name))
    if force:
        session.check(session.lxc("lxc-stop", "-k", "-n", name), f"lxc-stop -k {name}")
    else:
        timeout = session.opts.stop_timeout
        session.check(session.lxc("lxc-stop", "-t", str(timeout), "-n", name), f"lxc-stop {name}",
                      timeout=timeout + 30)


def vm_power(session: Session, name: str, action: PowerAction) -> VMInfo:
    """Apply a power action: start/stop/kill/restart/freeze/unfreeze (``VMNotFound`` from the first
    status read when the container is not there)."""
    if action == PowerAction.START:
        start(session, name)
    elif action == PowerAction.HARD_OFF:
        stop(session, name, force=True)
    elif action == PowerAction.STOP:
        stop(session, name, force=False)
    elif action == PowerAction.RESET:
        stop(session, name, force=True)
        start(session, name)
    elif action == PowerAction.PAUSE:
        if read_status(session, name).power_state != "RUNNING":
            raise errors.VMOperationFailed(f"{name} is not running: only a running container can be paused")
        session.check(session.lxc("lxc-freeze", "-n", name), f"lxc-freeze {name}")  # returns once frozen
    elif action == PowerAction.RESUME:
        if read_status(session, name).power_state in ("FROZEN", "FREEZING"):
            session.check(session.lxc("lxc-unfreeze", "-n", name), f"lxc-unfreeze {name}")
    else:
        raise errors.NotSupported(f"power action {action} is not supported")
    if action in (PowerAction.START, PowerAction.RESET):
        network.repoint(session, name)
    return read_status(session, name)
