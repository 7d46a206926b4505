"""Plugins of the event hooks that ship with the core (datasette keeps its own defaults the same way).

Each is an ordinary implementation of ``hookspecs.EventSpec``, registered by the core on start-up
next to the installed ones; ``register_defaults`` is the one place that lists them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from idcs_core.default_plugins.audit_log import AuditLogPlugin

if TYPE_CHECKING:
    from idcs_core.context import CoreContext


def register_defaults(core: CoreContext) -> list[str]:
    """Register the default event plugins of ``core``; return the names to unregister at its stop."""
    names = []
    for name, plugin in (("audit-log", AuditLogPlugin(core)),):
        unique = f"{name}@{id(core):x}"  # several cores (tests) may share one registry
        core.plugins.register_event_plugin(unique, plugin)
        names.append(unique)
    return names


def unregister_defaults(core: CoreContext, names: list[str]) -> None:
    """Undo ``register_defaults``."""
    for name in names:
        if core.plugins.events.has_plugin(name):
            core.plugins.events.unregister(name=name)
