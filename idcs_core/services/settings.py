"""Runtime settings an admin may change (``/api/system/settings``), kept in the database.

Only the keys below exist; each has a type and a default. Values are cached in
memory and written through on change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from idcs_core import errors
from idcs_core.db.models import Setting

if TYPE_CHECKING:
    from idcs_core.context import CoreContext

# key: (type, default, description)
SETTINGS: dict[str, tuple[type, Any, str]] = {
    "panel_name": (str, "OpenIDCS", "name shown by panels"),
    "host_timeout": (float, 5.0, "seconds a host may take to answer a status or list call "
                              "(default: IDCS_HOST_TIMEOUT or 5)"),
    "token_ttl_seconds": (int, 12 * 3600, "lifetime of a login token"),
    "temp_token_ttl_seconds": (int, 3600, "lifetime of a temporary one-VM token"),
    "login_max_failures": (int, 5, "failed logins before a user name is locked"),
    "login_lock_seconds": (int, 300, "how long a user name stays locked"),
    "default_quota": (dict, {}, "quota limits given to new users (max_vms, max_cpu, ...; -1 = unlimited)"),
    "usage_sample_seconds": (int, 60, "interval of the VM usage history samples"),
    "audit_keep_days": (int, 90, "days of audit log kept"),
}
PRIVATE_KEYS = {"api_token"}


class SettingsService:
    def __init__(self, core: CoreContext) -> None:
        self.core = core
        self._values: dict[str, Any] = {k: default for k, (_t, default, _d) in SETTINGS.items()}

    async def load(self) -> None:
        self._values["host_timeout"] = float(self.core.config.host_timeout)
        async with self.core.db.session() as s:
            for row in (await s.execute(select(Setting).where(Setting.key.in_(list(SETTINGS))))).scalars():
                self._values[row.key] = row.value

    def get(self, key: str) -> Any:
        return self._values[key]

    def public(self) -> dict[str, Any]:
        return dict(self._values)

    def describe(self) -> dict[str, dict[str, Any]]:
        return {k: {"type": t.__name__, "default": d, "description": desc} for k, (t, d, desc) in SETTINGS.items()}

    @staticmethod
    def coerce(key: str, value: Any) -> Any:
        if key not in SETTINGS:
            raise errors.BadRequest(f"unknown setting {key!r:.70}; known: {', '.join(SETTINGS)}")
        typ = SETTINGS[key][0]
        if typ is bool or (isinstance(value, bool) and typ is not bool):
            raise errors.BadRequest(f"{key}: expected {typ.__name__}")
        try:
            coerced = typ(value) if not isinstance(value, typ) else value
        except (TypeError, ValueError):
            raise errors.BadRequest(f"{key}: expected {typ.__name__}") from None
        if typ in (int, float) and coerced < 0:
            raise errors.BadRequest(f"{key}: must not be negative")
        if typ is str and len(coerced) > 255:
            raise errors.BadRequest(f"{key}: at most 255 characters")
        return coerced

    async def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Validate every change first, then store them all (nothing changes on bad input)."""
        coerced = {k: self.coerce(k, v) for k, v in changes.items()}
        async with self.core.db.session() as s:
            for key, value in coerced.items():
                row = await s.get(Setting, key)
                if row is None:
                    s.add(Setting(key=key, value=value))
                else:
                    row.value = value
        self._values.update(coerced)
        return self.public()
