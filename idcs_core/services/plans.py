"""A host's sale plans (billing dialect): stored in the host's options as ``server_plan``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from idcs_core import errors
from idcs_core.services.lookup import get_host

if TYPE_CHECKING:
    from idcs_core.context import CoreContext

Plan = dict[str, Any]
MAX_STORED = 16384  # characters of the stored plans' text


def plan_items(plans: Any) -> list[Plan]:
    """Stored plans as a list of objects with a name (older stores hold one object)."""
    if isinstance(plans, dict):
        plans = [plans]
    return [p for p in (plans or []) if isinstance(p, dict)]


async def host_plans(core: CoreContext, hs_name: str) -> list[Plan]:
    """The host's plans; 1001 for an unknown host."""
    async with core.db.session() as s:
        host = await get_host(s, hs_name)
        return plan_items((host.options or {}).get("server_plan"))


async def change_plans(core: CoreContext, hs_name: str, change: Callable[[list[Plan]], list[Any]]) -> list[Any]:
    """Store ``change(current plans)`` as the host's plans in one transaction and return them.

    ``change`` may raise (nothing is stored then); 400 when the result is too large."""
    async with core.db.session() as s:
        host = await get_host(s, hs_name)
        plans = change(plan_items((host.options or {}).get("server_plan")))
        if len(str(plans)) > MAX_STORED:
            raise errors.BadRequest("plans too large")
        host.options = dict(host.options or {}) | {"server_plan": plans}
    return plans
