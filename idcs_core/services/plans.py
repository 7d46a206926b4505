"""A host's sale plans (billing dialect): stored in the host's options as ``server_plan``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from idcs_core import errors
from idcs_core.services.audit import recorded
from idcs_core.services.lookup import get_host

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal

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


async def replace_plans(core: CoreContext, principal: Principal, hs_name: str, plans: list[Any]) -> list[Any]:
    """Make ``plans`` the host's sale plans."""
    async with recorded(core, principal, "host.plans", hs_name, "all"):
        return await _change_plans(core, hs_name, lambda current: plans)


async def put_plan(core: CoreContext, principal: Principal, hs_name: str, plan: Plan) -> list[Any]:
    """Add the plan named ``plan["name"]``, or replace the host's plan of that name."""
    async with recorded(core, principal, "host.plans", hs_name, plan["name"]):
        return await _change_plans(core, hs_name, lambda current: [
            p for p in current if p.get("name") != plan["name"]] + [plan])


async def delete_plan(core: CoreContext, principal: Principal, hs_name: str, plan_name: str) -> list[Any]:
    """Remove the host's plan ``plan_name`` (404 when it has none) and return the plans kept."""
    def without(current: list[Plan]) -> list[Any]:
        kept = [p for p in current if p.get("name") != plan_name]
        if len(kept) == len(current):
            raise errors.NotFound(f"host {hs_name} has no plan {plan_name}")
        return kept

    async with recorded(core, principal, "host.plan-delete", hs_name, plan_name):
        return await _change_plans(core, hs_name, without)


async def _change_plans(core: CoreContext, hs_name: str, change: Callable[[list[Plan]], list[Any]]) -> list[Any]:
    """Store ``change(current plans)`` as the host's plans in one transaction and return them.

    ``change`` may raise (nothing is stored then); 400 when the result is too large."""
    async with core.db.session() as s:
        host = await get_host(s, hs_name)
        plans = change(plan_items((host.options or {}).get("server_plan")))
        if len(str(plans)) > MAX_STORED:
            raise errors.BadRequest("plans too large")
        host.options = dict(host.options or {}) | {"server_plan": plans}
    return plans
