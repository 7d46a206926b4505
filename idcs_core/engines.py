"""The typed engine facade: how services call engines.

Every engine hook has one typed ``async`` method here, with its timeout class
declared beside it (``SHORT``: reads a page waits for, bounded by the
``host_timeout`` setting; ``LONG``: changes a task makes, bounded by the
configured ``task_timeout``). Services call ``core.engines.nat_add(vm, rule,
progress)`` instead of naming a hook by a string, so a change to a hook shows
its callers to the type checker.

The VM methods take the VM's record (``idcs_core.db.models.VM``) or a
``VMTarget`` (host + ``vm_uuid`` + ``ref``) and pass the engine the VM's stored
``ref`` (the ``VMInfo.ref`` the engine returned from create, list or status),
or ``vm_uuid`` when the engine never returned one.

``EngineHooks`` is a ``Protocol`` mirroring ``hookspecs.EngineSpec`` hook by
hook; ``check_engine`` holds an engine implementation to it (an engine
implements a subset of the hooks and may leave out arguments it does not use,
which a plain structural check cannot express).
"""

from __future__ import annotations

import collections.abc
import enum
import inspect
import time
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from idcs_core import hookspecs
from idcs_core.types import (
    BackupInfo,
    ConsoleEndpoint,
    DiskSpec,
    HostSpec,
    HostStatus,
    IPAddress,
    NatRule,
    OSImage,
    PowerAction,
    Progress,
    ProxyRule,
    TerminalChannel,
    TrafficCounters,
    VMInfo,
    VMSpec,
)

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.db.models import VM, Host


class Timeout(enum.Enum):
    """How long the core waits for a hook: ``SHORT`` (reads: ``host_timeout``) or ``LONG`` (task work)."""

    SHORT = "short"
    LONG = "long"


# The timeout class of every engine hook. A hook missing here is a bug the tests catch.
TIMEOUTS: dict[str, Timeout] = {
    "engine_describe": Timeout.SHORT,
    "host_connect": Timeout.SHORT,
    "host_status": Timeout.SHORT,
    "host_power": Timeout.SHORT,
    "host_close": Timeout.SHORT,
    "os_images": Timeout.SHORT,
    "vm_list": Timeout.SHORT,
    "vm_create": Timeout.LONG,
    "vm_update": Timeout.LONG,
    "vm_delete": Timeout.LONG,
    "vm_reinstall": Timeout.LONG,
    "vm_power": Timeout.LONG,
    "vm_status": Timeout.SHORT,
    "vm_set_password": Timeout.LONG,
    "vm_console": Timeout.SHORT,
    "vm_terminal_open": Timeout.LONG,
    "vm_ip_list": Timeout.SHORT,
    "vm_ip_add": Timeout.LONG,
    "vm_ip_remove": Timeout.LONG,
    "nat_add": Timeout.LONG,
    "nat_remove": Timeout.LONG,
    "nat_sync": Timeout.LONG,
    "proxy_add": Timeout.LONG,
    "proxy_remove": Timeout.LONG,
    "disk_attach": Timeout.LONG,
    "disk_detach": Timeout.LONG,
    "disk_delete": Timeout.LONG,
    "iso_mount": Timeout.LONG,
    "iso_unmount": Timeout.LONG,
    "backup_create": Timeout.LONG,
    "backup_restore": Timeout.LONG,
    "backup_delete": Timeout.LONG,
    "backup_list": Timeout.SHORT,
    "vm_traffic": Timeout.LONG,
    "vm_bandwidth": Timeout.LONG,
}


@dataclass(frozen=True)
class VMTarget:
    """One VM on one host, as the engine addresses it: for callers that hold no VM record
    (a backup of a VM whose record is gone, a scan's candidate)."""

    host: Host | HostSpec
    vm_uuid: str
    ref: str | None = None



class EngineFacade:
    """One typed method per engine hook; the only way services reach an engine."""

    def __init__(self, core: CoreContext) -> None:
        self.core = core

    # ------------------------------------------------------------------ plumbing

    def spec(self, host: Host | HostSpec) -> HostSpec:
        """The ``HostSpec`` an engine receives for ``host`` (a record or a spec already)."""
        return host if isinstance(host, HostSpec) else self.core.host_spec(host)

    def timeout(self, hook: str) -> float:
        """Seconds ``hook`` may take, from its timeout class."""
        if TIMEOUTS[hook] is Timeout.LONG:
            return float(self.core.config.task_timeout)
        return float(self.core.settings.get("host_timeout"))

    async def invoke(self, host: Host | HostSpec, hook: str, **kwargs: Any) -> Any:
        """Call ``hook`` on the engine of ``host`` with its timeout class, counting it in the metrics.

        The typed methods below are the way in; this is their one seam.
        """
        spec = self.spec(host)
        engine = self.core.plugins.engine(spec.server_type)
        timeout = self.timeout(hook)
        ops = self.core.ops
        if ops is None:
            return await engine.call(hook, spec, timeout=timeout, **kwargs)
        started, ok = time.perf_counter(), False
        try:
            result = await engine.call(hook, spec, timeout=timeout, **kwargs)
            ok = True
            return result
        finally:
            ops.metrics.observe_hook(engine.name, hook, ok, time.perf_counter() - started)

    async def _vm(self, hook: str, vm: VM | VMTarget, **kwargs: Any) -> Any:
        """Call a VM hook: ``vm_uuid`` and ``ref`` (the stored ref, else ``vm_uuid``) come from ``vm``."""
        return await self.invoke(vm.host, hook, vm_uuid=vm.vm_uuid, ref=vm.ref or vm.vm_uuid, **kwargs)

    @staticmethod
    def with_ref(spec: VMSpec, vm: VM | VMTarget) -> VMSpec:
        """``spec`` carrying ``vm``'s ref (update, reinstall): the stored ref, else ``vm_uuid``."""
        spec.ref = vm.ref or vm.vm_uuid
        return spec

    # ------------------------------------------------------------------ hosts

    async def host_connect(self, host: Host | HostSpec) -> HostStatus:
        return cast(HostStatus, await self.invoke(host, "host_connect"))

    async def host_status(self, host: Host | HostSpec) -> HostStatus:
        return cast(HostStatus, await self.invoke(host, "host_status"))

    async def host_power(self, host: Host | HostSpec, action: str) -> None:
        await self.invoke(host, "host_power", action=action)

    async def host_close(self, host: Host | HostSpec) -> None:
        await self.invoke(host, "host_close")

    async def os_images(self, host: Host | HostSpec) -> list[OSImage]:
        return cast(list[OSImage], await self.invoke(host, "os_images"))

    async def vm_list(self, host: Host | HostSpec) -> list[VMInfo]:
        return cast(list[VMInfo], await self.invoke(host, "vm_list"))

    async def backup_list(self, host: Host | HostSpec) -> list[BackupInfo]:
        return cast(list[BackupInfo], await self.invoke(host, "backup_list"))

    # ------------------------------------------------------------------ VM life cycle

    async def vm_create(self, host: Host | HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        return cast(VMInfo, await self.invoke(host, "vm_create", spec=spec, progress=progress))

    async def vm_update(self, vm: VM | VMTarget, spec: VMSpec, progress: Progress) -> VMInfo:
        return cast(VMInfo, await self.invoke(vm.host, "vm_update", spec=self.with_ref(spec, vm),
                                              progress=progress))

    async def vm_reinstall(self, vm: VM | VMTarget, spec: VMSpec, progress: Progress) -> VMInfo:
        return cast(VMInfo, await self.invoke(vm.host, "vm_reinstall", spec=self.with_ref(spec, vm),
                                              progress=progress))

    async def vm_delete(self, vm: VM | VMTarget, progress: Progress) -> None:
        await self._vm("vm_delete", vm, progress=progress)

    async def vm_power(self, vm: VM | VMTarget, action: PowerAction) -> VMInfo:
        return cast(VMInfo, await self._vm("vm_power", vm, action=action))

    async def vm_status(self, vm: VM | VMTarget) -> VMInfo:
        return cast(VMInfo, await self._vm("vm_status", vm))

    async def vm_set_password(self, vm: VM | VMTarget, username: str, password: str) -> None:
        await self._vm("vm_set_password", vm, username=username, password=password)

    # ------------------------------------------------------------------ consoles

    async def vm_console(self, vm: VM | VMTarget) -> ConsoleEndpoint:
        return cast(ConsoleEndpoint, await self._vm("vm_console", vm))

    async def vm_terminal_open(self, vm: VM | VMTarget, cols: int, rows: int) -> TerminalChannel:
        return cast(TerminalChannel, await self._vm("vm_terminal_open", vm, cols=cols, rows=rows))

    # ------------------------------------------------------------------ network

    async def vm_ip_list(self, vm: VM | VMTarget) -> list[IPAddress]:
        return cast(list[IPAddress], await self._vm("vm_ip_list", vm))

    async def vm_ip_add(self, vm: VM | VMTarget, request: Mapping[str, Any]) -> IPAddress:
        return cast(IPAddress, await self._vm("vm_ip_add", vm, request=dict(request)))

    async def vm_ip_remove(self, vm: VM | VMTarget, address: IPAddress) -> None:
        await self._vm("vm_ip_remove", vm, address=address)

    async def nat_add(self, vm: VM | VMTarget, rule: NatRule, progress: Progress) -> NatRule | None:
        return cast("NatRule | None", await self._vm("nat_add", vm, rule=rule, progress=progress))

    async def nat_remove(self, vm: VM | VMTarget, rule: NatRule, progress: Progress) -> None:
        await self._vm("nat_remove", vm, rule=rule, progress=progress)

    async def nat_sync(self, vm: VM | VMTarget, rules: list[NatRule]) -> None:
        await self._vm("nat_sync", vm, rules=rules)

    async def vm_traffic(self, host: Host | HostSpec, vm_uuids: list[str]) -> dict[str, TrafficCounters]:
        return cast(dict[str, TrafficCounters], await self.invoke(host, "vm_traffic", vm_uuids=vm_uuids))

    async def vm_bandwidth(self, vm: VM | VMTarget, up_mbit: int, down_mbit: int) -> None:
        await self._vm("vm_bandwidth", vm, up_mbit=up_mbit, down_mbit=down_mbit)

    async def proxy_add(self, vm: VM | VMTarget, rule: ProxyRule) -> None:
        await self._vm("proxy_add", vm, rule=rule)

    async def proxy_remove(self, vm: VM | VMTarget, rule: ProxyRule) -> None:
        await self._vm("proxy_remove", vm, rule=rule)

    # ------------------------------------------------------------------ storage

    async def disk_attach(self, vm: VM | VMTarget, disk: DiskSpec, progress: Progress) -> None:
        await self._vm("disk_attach", vm, disk=disk, progress=progress)

    async def disk_detach(self, vm: VM | VMTarget, disk_name: str, progress: Progress) -> None:
        await self._vm("disk_detach", vm, disk_name=disk_name, progress=progress)

    async def disk_delete(self, vm: VM | VMTarget, disk_name: str, progress: Progress) -> None:
        await self._vm("disk_delete", vm, disk_name=disk_name, progress=progress)

    async def iso_mount(self, vm: VM | VMTarget, iso_name: str) -> None:
        await self._vm("iso_mount", vm, iso_name=iso_name)

    async def iso_unmount(self, vm: VM | VMTarget, iso_name: str) -> None:
        await self._vm("iso_unmount", vm, iso_name=iso_name)

    # ------------------------------------------------------------------ backups

    async def backup_create(self, vm: VM | VMTarget, backup_name: str, description: str,
                            progress: Progress) -> BackupInfo:
        return cast(BackupInfo, await self._vm("backup_create", vm, backup_name=backup_name,
                                               description=description, progress=progress))

    async def backup_restore(self, vm: VM | VMTarget, backup_name: str, progress: Progress) -> VMInfo:
        return cast(VMInfo, await self._vm("backup_restore", vm, backup_name=backup_name, progress=progress))

    async def backup_delete(self, vm: VM | VMTarget, backup_name: str) -> None:
        await self._vm("backup_delete", vm, backup_name=backup_name)


# ---------------------------------------------------------------------- the Protocol of the hookspecs


class EngineHooks(Protocol):
    """Every engine hook with its full signature: what ``hookspecs.EngineSpec`` declares.

    An engine implements any subset of these and may leave out parameters it does not
    use; ``check_engine`` compares each implemented hook with its entry here.
    """

    def engine_describe(self) -> dict[str, Any]: ...
    def host_connect(self, host: HostSpec) -> HostStatus: ...
    def host_status(self, host: HostSpec) -> HostStatus: ...
    def host_power(self, host: HostSpec, action: str) -> None: ...
    def host_close(self, host: HostSpec) -> None: ...
    def os_images(self, host: HostSpec) -> list[OSImage]: ...
    def vm_list(self, host: HostSpec) -> list[VMInfo]: ...
    def vm_create(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo: ...
    def vm_update(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo: ...
    def vm_delete(self, host: HostSpec, vm_uuid: str, ref: str, progress: Progress) -> None: ...
    def vm_reinstall(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo: ...
    def vm_power(self, host: HostSpec, vm_uuid: str, ref: str, action: PowerAction) -> VMInfo: ...
    def vm_status(self, host: HostSpec, vm_uuid: str, ref: str) -> VMInfo: ...
    def vm_set_password(self, host: HostSpec, vm_uuid: str, ref: str, username: str, password: str) -> None: ...
    def vm_console(self, host: HostSpec, vm_uuid: str, ref: str) -> ConsoleEndpoint: ...
    def vm_terminal_open(self, host: HostSpec, vm_uuid: str, ref: str, cols: int, rows: int) -> TerminalChannel: ...
    def vm_ip_list(self, host: HostSpec, vm_uuid: str, ref: str) -> list[IPAddress]: ...
    def vm_ip_add(self, host: HostSpec, vm_uuid: str, ref: str, request: dict[str, Any]) -> IPAddress: ...
    def vm_ip_remove(self, host: HostSpec, vm_uuid: str, ref: str, address: IPAddress) -> None: ...
    def nat_add(self, host: HostSpec, vm_uuid: str, ref: str, rule: NatRule, progress: Progress) -> NatRule: ...
    def nat_remove(self, host: HostSpec, vm_uuid: str, ref: str, rule: NatRule, progress: Progress) -> None: ...
    def nat_sync(self, host: HostSpec, vm_uuid: str, ref: str, rules: list[NatRule]) -> None: ...
    def proxy_add(self, host: HostSpec, vm_uuid: str, ref: str, rule: ProxyRule) -> None: ...
    def proxy_remove(self, host: HostSpec, vm_uuid: str, ref: str, rule: ProxyRule) -> None: ...
    def disk_attach(self, host: HostSpec, vm_uuid: str, ref: str, disk: DiskSpec, progress: Progress) -> None: ...
    def disk_detach(self, host: HostSpec, vm_uuid: str, ref: str, disk_name: str, progress: Progress) -> None: ...
    def disk_delete(self, host: HostSpec, vm_uuid: str, ref: str, disk_name: str, progress: Progress) -> None: ...
    def iso_mount(self, host: HostSpec, vm_uuid: str, ref: str, iso_name: str) -> None: ...
    def iso_unmount(self, host: HostSpec, vm_uuid: str, ref: str, iso_name: str) -> None: ...
    def backup_create(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str, description: str,
                      progress: Progress) -> BackupInfo: ...
    def backup_restore(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str,
                       progress: Progress) -> VMInfo: ...
    def backup_delete(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str) -> None: ...
    def backup_list(self, host: HostSpec) -> list[BackupInfo]: ...
    def vm_traffic(self, host: HostSpec, vm_uuids: list[str]) -> dict[str, TrafficCounters]: ...
    def vm_bandwidth(self, host: HostSpec, vm_uuid: str, ref: str, up_mbit: int, down_mbit: int) -> None: ...


HOOK_NAMES: tuple[str, ...] = tuple(
    name for name, value in vars(hookspecs.EngineSpec).items() if not name.startswith("_") and callable(value))


def _hints(fn: Any, owner: Any) -> dict[str, Any]:
    module = inspect.getmodule(owner) or inspect.getmodule(fn)
    namespace = dict(vars(module)) if module is not None else {}
    try:
        return typing.get_type_hints(fn, globalns=namespace)
    except Exception:  # an annotation the engine's module cannot resolve: compared by name only
        return {}


def _same_type(declared: Any, implemented: Any) -> bool:
    """Whether an implementation's annotation fits the Protocol's: equal, ``Any`` or absent, the bare
    container of a parametrised one (``list`` for ``list[OSImage]``), an optional of the declared
    type, or any callable for ``Progress``."""
    if implemented is inspect.Parameter.empty or Any in (declared, implemented) or declared == implemented:
        return True
    if typing.get_origin(implemented) in (typing.Union, types.UnionType):
        return declared in typing.get_args(implemented)
    if declared is Progress:
        return implemented is Progress or typing.get_origin(implemented) is collections.abc.Callable
    declared_origin = typing.get_origin(declared) or declared
    return declared_origin is implemented and bool(typing.get_args(declared))


def check_engine(plugin: object) -> list[str]:
    """What is wrong with ``plugin`` as an engine, measured against ``EngineHooks``: one line per problem
    (an unknown hook, a parameter the hook does not have, an annotation that differs); empty when it fits.

    Parameters an implementation leaves out are fine (pluggy passes only those declared).
    """
    problems: list[str] = []
    protocol_hints = {name: typing.get_type_hints(getattr(EngineHooks, name)) for name in HOOK_NAMES}
    for name in dir(plugin):
        fn = getattr(plugin, name, None)
        if name.startswith("_") or not callable(fn) or not hasattr(fn, f"{hookspecs.PROJECT}_impl"):
            continue
        if name not in protocol_hints:
            problems.append(f"{name}: not an engine hook")
            continue
        declared = protocol_hints[name]
        hints = _hints(fn, plugin)
        for param in inspect.signature(fn).parameters.values():
            if param.name == "self":
                continue
            if param.name not in declared:
                problems.append(f"{name}: parameter {param.name!r} is not one of the hook's")
                continue
            got = hints.get(param.name, param.annotation)
            if isinstance(got, str) or not _same_type(declared[param.name], got):
                if isinstance(got, str) and got.split("[")[0].split(".")[-1] in str(declared[param.name]):
                    continue
                problems.append(f"{name}: parameter {param.name!r} is annotated {got!r}, "
                                f"the hook passes {declared[param.name]!r}")
        if "return" in hints and not _same_type(declared["return"], hints["return"]):
            problems.append(f"{name}: returns {hints['return']!r}, the hook expects {declared['return']!r}")
    return problems


__all__ = ["TIMEOUTS", "EngineFacade", "EngineHooks", "Timeout", "VMTarget", "check_engine"]
