"""Finding, loading and calling plugins.

Engines are found through the entry-point group ``idcs.engines`` (the entry
point's *name* is the engine type, e.g. ``LXD = "idcs_lxd.engine"``), loaded
by stevedore, and each put into a ``pluggy.PluginManager`` of its own that
holds the ``EngineSpec`` hooks. A host of type ``LXD`` is therefore served by
``registry.engine("LXD").call("vm_power", ...)`` and reaches the LXD engine
alone. Services do not call hooks by name: they use the typed facade
``idcs_core.engines.EngineFacade`` (``core.engines``), which passes each VM's
ref. Event plugins (``idcs.plugins``) share one global manager.

A plugin that fails to import, or implements a hook name that does not exist,
is recorded in ``registry.failures`` (shown by ``idcs plugins`` and
``GET /api/system/plugins``) and the server starts without it.

Environment:
- ``IDCS_LOAD_ENGINES=a,b``: load only these engine types (tests, operators).
- ``IDCS_TRACE_HOOKS=1``: log every engine hook call with its duration.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy
from stevedore import ExtensionManager

from idcs_core import errors, hookspecs
from idcs_core.types import HostSpec

log = logging.getLogger("idcs.plugins")

ENGINE_GROUP = "idcs.engines"
EVENT_GROUP = "idcs.plugins"

# Capability name -> the hooks an engine implements to have it. Shown by the API
# and used by the conformance kit to decide which cases apply.
CAPABILITIES: dict[str, tuple[str, ...]] = {
    "vm_create": ("vm_create",),
    "vm_update": ("vm_update",),
    "vm_delete": ("vm_delete",),
    "vm_reinstall": ("vm_reinstall",),
    "power": ("vm_power",),
    "scan": ("vm_list",),
    "images": ("os_images",),
    "host_power": ("host_power",),
    "password": ("vm_set_password",),
    "console": ("vm_console",),
    "terminal": ("vm_terminal_open",),
    "ip": ("vm_ip_list",),
    "ip_manage": ("vm_ip_add", "vm_ip_remove"),
    "nat": ("nat_add", "nat_remove"),
    "proxy": ("proxy_add", "proxy_remove"),
    "disk": ("disk_attach", "disk_detach", "disk_delete"),
    "iso": ("iso_mount", "iso_unmount"),
    "backup": ("backup_create", "backup_restore", "backup_delete"),
    "backup_scan": ("backup_list",),
    "traffic": ("vm_traffic",),
    "bandwidth": ("vm_bandwidth",),
}

# One pool for all engine calls: a slow host ties up a thread, never the event loop.
_executor = ThreadPoolExecutor(max_workers=int(os.environ.get("IDCS_ENGINE_THREADS", "64")),
                               thread_name_prefix="idcs-engine")


def _trace_enabled() -> bool:
    return os.environ.get("IDCS_TRACE_HOOKS", "") not in ("", "0")


@dataclass
class PluginFailure:
    """A plugin that could not be loaded, and why."""

    group: str
    name: str
    target: str
    error: str


class Engine:
    """One engine type: its plugin manager and the async way to call its hooks."""

    def __init__(self, name: str, plugin: object, dist: str | None = None, version: str | None = None):
        self.name = name
        self.dist = dist
        self.version = version
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs.EngineSpec)
        self.pm.register(plugin, name=name)
        self.pm.check_pending()  # a misspelt hook name fails the load, loudly
        self.plugin = plugin
        describe = self.pm.hook.engine_describe()
        self.description: dict[str, Any] = describe if isinstance(describe, dict) else {}

    @functools.cached_property
    def hooks(self) -> frozenset[str]:
        """Names of the engine hooks this engine implements."""
        return frozenset(
            name for name in dir(hookspecs.EngineSpec)
            if not name.startswith("_") and getattr(self.pm.hook, name).get_hookimpls()
        )

    @functools.cached_property
    def capabilities(self) -> list[str]:
        return sorted(cap for cap, needed in CAPABILITIES.items() if all(h in self.hooks for h in needed))

    def supports(self, hook: str) -> bool:
        return hook in self.hooks

    async def call(self, hook: str, host: HostSpec, *, timeout: float, **kwargs: Any) -> Any:
        """Call ``hook`` for ``host`` off the event loop, bounded by ``timeout`` seconds.

        Missing hook -> ``NotSupported``; timeout -> ``HostUnreachable``; an
        exception that is not an ``IDCSError`` -> ``VMOperationFailed`` with its
        message (callers re-map it to 1004 for creation).
        """
        if hook not in self.hooks:
            raise errors.NotSupported(f"{hook.replace('_', ' ')} is not supported by the {self.name} engine")
        caller: pluggy.HookCaller = getattr(self.pm.hook, hook)
        impl = caller.get_hookimpls()[-1].function
        if "vm_uuid" in kwargs and not kwargs.get("ref"):  # every VM hook receives the VM's ref
            raise TypeError(f"{hook} needs ref= (the stored VMInfo.ref, else vm_uuid): "
                            "call engines through idcs_core.engines.EngineFacade")
        started = time.perf_counter()
        try:
            if inspect.iscoroutinefunction(impl):
                result = await asyncio.wait_for(caller(host=host, **kwargs), timeout)
            else:
                loop = asyncio.get_running_loop()
                fut = loop.run_in_executor(_executor, functools.partial(caller, host=host, **kwargs))
                # not wait_for: the thread cannot be stopped, so its future is kept for the caller
                done, _ = await asyncio.wait({fut}, timeout=timeout)
                if not done:
                    fut.add_done_callback(_consume)  # an error it ends with later is not "never retrieved"
                    raise errors.HookTimeout(f"host {host.name} did not answer {hook} within {timeout:g} s",
                                             pending=fut)
                result = fut.result()
        except errors.IDCSError:
            raise
        except TimeoutError as exc:  # an async hook, cancelled by wait_for
            raise errors.HookTimeout(f"host {host.name} did not answer {hook} within {timeout:g} s") from exc
        except Exception as exc:
            log.warning("engine %s hook %s on host %s failed: %s: %s",
                        self.name, hook, host.name, type(exc).__name__, exc)
            raise errors.VMOperationFailed(f"{self.name}: {exc}") from exc
        finally:
            if _trace_enabled():
                log.info("hook %s.%s(host=%s) %.1f ms", self.name, hook, host.name,
                         (time.perf_counter() - started) * 1000)
        return result


@dataclass
class PluginRegistry:
    """Every loaded engine and event plugin, plus what failed to load."""

    engines: dict[str, Engine] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    events: pluggy.PluginManager = field(default_factory=lambda: _new_event_manager())

    def engine(self, server_type: str) -> Engine:
        try:
            return self.engines[server_type]
        except KeyError:
            raise errors.NotSupported(f"engine {server_type!r} is not installed") from None

    def register_engine(self, name: str, plugin: object, dist: str | None = None,
                        version: str | None = None) -> Engine | None:
        """Add an engine; on a bad plugin record the failure and return None."""
        try:
            engine = Engine(name, plugin, dist, version)
        except Exception as exc:  # a broken plugin never takes the server down
            self._fail(ENGINE_GROUP, name, repr(plugin), exc)
            return None
        self.engines[name] = engine
        return engine

    def register_event_plugin(self, name: str, plugin: object) -> None:
        try:
            self.events.register(plugin, name=name)
            self.events.check_pending()
        except Exception as exc:
            self.events.unregister(name=name) if self.events.has_plugin(name) else None
            self._fail(EVENT_GROUP, name, repr(plugin), exc)

    def _fail(self, group: str, name: str, target: str, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        log.error("plugin %s (%s) failed to load: %s", name, group, message)
        self.failures.append(PluginFailure(group, name, target, message))

    async def emit(self, event: str, **kwargs: Any) -> None:
        """Call event hook ``event`` on every event plugin, in a worker thread."""
        caller = getattr(self.events.hook, event)
        if not caller.get_hookimpls():
            return
        await asyncio.get_running_loop().run_in_executor(
            _executor, functools.partial(_call_each, event, caller.get_hookimpls(), kwargs))

    def describe(self) -> list[dict[str, Any]]:
        """What ``idcs plugins`` and the API show: one entry per engine and per failure."""
        rows: list[dict[str, Any]] = [
            {"name": e.name, "kind": "engine", "distribution": e.dist, "version": e.version,
             "title": e.description.get("title", e.name), "capabilities": e.capabilities,
             "hooks": sorted(e.hooks), "error": None}
            for e in self.engines.values()
        ]
        rows += [
            {"name": name, "kind": "event", "distribution": None, "version": None,
             "hooks": sorted(c.name for c in self.events.get_hookcallers(plugin) or []), "error": None}
            for name, plugin in self.events.list_name_plugin()
        ]
        rows += [
            {"name": f.name, "kind": "engine" if f.group == ENGINE_GROUP else "event",
             "target": f.target, "error": f.error}
            for f in self.failures
        ]
        return rows


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _call_each(event: str, impls: list[Any], kwargs: dict[str, Any]) -> None:
    """Call every plugin's implementation on its own: one that raises is logged, and the
    others still hear of the event (a plain pluggy call would stop at the first error)."""
    for impl in impls:
        try:
            impl.function(**{name: kwargs[name] for name in impl.argnames})
        except Exception:
            log.exception("event plugin %s failed on %s", impl.plugin_name, event)


def _new_event_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs.EventSpec)
    return pm


def _distributions(groups: tuple[str, ...]) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(group, name, value) of every installed entry point in ``groups`` -> (distribution, version).

    stevedore's cached entry points do not carry their distribution, so it is looked up here.
    """
    found: dict[tuple[str, str, str], tuple[str, str]] = {}
    for dist in metadata.distributions():
        for ep in dist.entry_points:
            if ep.group in groups:
                found[(ep.group, ep.name, ep.value)] = (dist.metadata["Name"], dist.version)
    return found


def _instantiate(obj: object) -> object:
    """An entry point may name a module, an instance, or a class (instantiated here)."""
    return obj() if inspect.isclass(obj) else obj


def load_plugins() -> PluginRegistry:
    """Load every installed engine and event plugin; never raises for a broken plugin."""
    registry = PluginRegistry()
    wanted = {n.strip() for n in os.environ.get("IDCS_LOAD_ENGINES", "").split(",") if n.strip()}

    def on_failure(_manager: Any, ep: metadata.EntryPoint, exc: BaseException) -> None:
        registry._fail(ENGINE_GROUP if ep.group == ENGINE_GROUP else EVENT_GROUP, ep.name, ep.value, exc)

    dists = _distributions((ENGINE_GROUP, EVENT_GROUP))
    engines = ExtensionManager(ENGINE_GROUP, invoke_on_load=False, on_load_failure_callback=on_failure)
    for ext in engines:
        if wanted and ext.name not in wanted:
            continue
        if ext.name in registry.engines:
            registry._fail(ENGINE_GROUP, ext.name, ext.entry_point.value,
                           RuntimeError("another package already registers this engine type"))
            continue
        ep = ext.entry_point
        dist, version = dists.get((ENGINE_GROUP, ep.name, ep.value), (None, None))
        try:
            plugin = _instantiate(ext.plugin)
        except Exception as exc:
            registry._fail(ENGINE_GROUP, ext.name, ext.entry_point.value, exc)
            continue
        registry.register_engine(ext.name, plugin, dist, version)

    events = ExtensionManager(EVENT_GROUP, invoke_on_load=False, on_load_failure_callback=on_failure)
    for ext in events:
        try:
            registry.register_event_plugin(ext.name, _instantiate(ext.plugin))
        except Exception as exc:
            registry._fail(EVENT_GROUP, ext.name, ext.entry_point.value, exc)
    return registry
