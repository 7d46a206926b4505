"""Runtime settings an admin may change (``/api/system/settings``), kept in the database.

Only the keys below exist; each has a type, a default and an allowed range
(``LIMITS``): a value out of range would break logins or user creation, so it is
refused (400) before anything is stored. Values are cached in memory and written
through on change; a stored value that is no longer valid is ignored at start-up.
Another node's change (PostgreSQL) is heard through its commit's NOTIFY and read again.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from idcs_core import errors
from idcs_core.db.models import Setting
from idcs_core.db.session import SETTINGS as SETTINGS_TOPIC
from idcs_core.db.session import note
from idcs_core.profiles import PROFILES
from idcs_core.services.audit import recorded

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal

# what a new user may use until an administrator says otherwise (small: a customer is one VM plan)
DEFAULT_QUOTA = {"max_vms": 3, "max_cpu": 8, "max_ram": 16384, "max_hdd": 200, "max_nat": 20, "max_ips": 2,
                 "max_backups": 5}

# key: (type, default, description)
SETTINGS: dict[str, tuple[type, Any, str]] = {
    "panel_name": (str, "OpenIDCS", "name shown by panels"),
    "host_timeout": (float, 5.0, "seconds a host may take to answer a status or list call "
                              "(default: IDCS_HOST_TIMEOUT or 5)"),
    "token_ttl_seconds": (int, 12 * 3600, "lifetime of a login token"),
    "temp_token_ttl_seconds": (int, 3600, "lifetime of a temporary one-VM token"),
    "login_max_failures": (int, 5, "failed logins for one account (from anywhere) before it is locked "
                                   "for the addresses that failed (others still get in with the right password)"),
    "login_address_max_failures": (int, 30, "failed logins (passwords or API token) from one source address "
                                            "before that address is locked"),
    "login_lock_seconds": (int, 300, "how long a lock lasts, and the window failures are counted in"),
    "default_quota": (dict, dict(DEFAULT_QUOTA), "quota limits given to new users (max_vms, max_cpu, ...; "
                                                 "-1 = unlimited)"),
    "max_vm_cpu_num": (int, 64, "most CPU cores of one VM, for every caller (admins and the API token too)"),
    "max_vm_ram_num": (int, 262144, "most MB of RAM of one VM, for every caller"),
    "max_vm_hdd_num": (int, 4096, "most GB of one VM's system disk, and of one extra disk, for every caller"),
    "proxy_domain_suffixes": (str, "", "comma-separated domain suffixes customers' reverse proxies must end "
                                       "with (e.g. 'vps.example.net'); empty: any domain no other user has"),
    "usage_sample_seconds": (int, 60, "interval of the VM and host usage history samples"),
    "audit_keep_days": (int, 90, "days of audit log kept (older entries are removed at start-up and "
                                 "then daily)"),
    # the core's reverse proxy (Caddy) on hosts whose proxy_endpoint is local or http://...
    "proxy_http_port": (int, 80, "port the reverse proxy serves plain-HTTP domains on"),
    "proxy_https_port": (int, 443, "port the reverse proxy serves HTTPS domains on (is_https)"),
    "proxy_tls_issuer": (str, "internal", "who signs the reverse proxy's certificates: internal (Caddy's own "
                                          "CA, never installed in system trust stores) or acme (public ACME)"),
    "api_token_profile": (str, "openidcs", "client profile of the global API token: openidcs (default), "
                                           "idcsmart, swapidc or xiaoheifs (see /api/tokens/profiles)"),
    # operations (README "Operations")
    "webhook_max_attempts": (int, 6, "tries of one webhook delivery before it is marked failed"),
    "webhook_backoff_seconds": (float, 10.0, "wait before the 2nd try of a webhook delivery; doubles each try"),
    "webhook_timeout_seconds": (float, 10.0, "seconds a webhook receiver may take to answer one try"),
    "metrics_allow": (str, "127.0.0.1/32,::1/128", "addresses (comma-separated CIDRs) that may read /metrics "
                                                   "without a token; empty: none"),
    "metrics_token": (str, "", "bearer token that may read /metrics from anywhere; empty: none (write-only, "
                               "shown as ***)"),
    "traffic_sample_seconds": (int, 300, "interval of traffic accounting: each host's VM network counters are "
                                         "read this often"),
    "traffic_count": (str, "both", "what counts against a VM's flu_num (GB per month): both directions, "
                                   "only out (sent by the VM) or only in (received)"),
    "traffic_over_action": (str, "none", "what happens when a VM passes its flu_num: none (event only), "
                                         "throttle (capped at traffic_throttle_mbit) or suspend (S_PAUSE)"),
    "traffic_throttle_mbit": (int, 1, "Mbit/s each way of a VM throttled for passing its flu_num"),
}
PRIVATE_KEYS = {"api_token"}
WRITE_ONLY_KEYS = {"metrics_token"}  # stored, never shown

YEAR = 365 * 24 * 3600
# key: (lowest, highest) allowed value of a number setting
LIMITS: dict[str, tuple[float, float]] = {
    "host_timeout": (0.1, 600.0),
    "token_ttl_seconds": (60, YEAR),
    "temp_token_ttl_seconds": (60, YEAR),
    "login_max_failures": (1, 1000),
    "login_address_max_failures": (1, 100000),
    "max_vm_cpu_num": (1, 4096),
    "max_vm_ram_num": (16, 2**31 - 1),
    "max_vm_hdd_num": (1, 2**31 - 1),
    "login_lock_seconds": (0, YEAR),
    "usage_sample_seconds": (5, 24 * 3600),
    "audit_keep_days": (1, 100 * 365),
    "proxy_http_port": (1, 65535),
    "proxy_https_port": (1, 65535),
    "webhook_max_attempts": (1, 30),
    "webhook_backoff_seconds": (0.05, 24 * 3600),
    "webhook_timeout_seconds": (0.5, 300),
    "traffic_sample_seconds": (1, 24 * 3600),
    "traffic_throttle_mbit": (1, 100000),
}
CHOICES: dict[str, tuple[str, ...]] = {"proxy_tls_issuer": ("internal", "acme"), "api_token_profile": tuple(PROFILES),
                                       "traffic_count": ("both", "out", "in"),
                                       "traffic_over_action": ("none", "throttle", "suspend")}
QUOTA_KEYS = ("max_vms", "max_cpu", "max_ram", "max_hdd", "max_nat", "max_ips", "max_backups")
QUOTA_MAX = 2**31 - 1  # the quota columns are 32-bit integers

log = logging.getLogger("idcs.settings")


class SettingsService:
    def __init__(self, core: CoreContext) -> None:
        self.core = core
        self._values: dict[str, Any] = {k: default for k, (_t, default, _d) in SETTINGS.items()}
        core.db.listen(SETTINGS_TOPIC, self._changed)
        core.db.reset_listeners.append(lambda: self._changed(set(SETTINGS)))

    def _changed(self, keys: set[str]) -> None:
        """Settings changed by a commit here or on another node: read them again."""
        if keys & set(SETTINGS):
            self.core.spawn(self.load())

    async def load(self) -> None:
        self._values["host_timeout"] = float(self.core.config.host_timeout)
        async with self.core.db.session() as s:
            for row in (await s.execute(select(Setting).where(Setting.key.in_(list(SETTINGS))))).scalars():
                try:
                    self._values[row.key] = self.coerce(row.key, row.value)
                except errors.BadRequest as exc:
                    log.warning("stored setting ignored, default used: %s", exc.msg)

    def get(self, key: str) -> Any:
        return self._values[key]

    def public(self) -> dict[str, Any]:
        return {k: "***" if k in WRITE_ONLY_KEYS and v else v for k, v in self._values.items()}

    def describe(self) -> dict[str, dict[str, Any]]:
        return {k: {"type": t.__name__, "default": d, "description": desc}
                | ({"min": LIMITS[k][0], "max": LIMITS[k][1]} if k in LIMITS else {})
                | ({"enum": list(CHOICES[k])} if k in CHOICES else {})
                for k, (t, d, desc) in SETTINGS.items()}

    @staticmethod
    def coerce(key: str, value: Any) -> Any:
        """``value`` as the type of setting ``key``; BadRequest when it is not valid for it."""
        if key not in SETTINGS:
            raise errors.BadRequest(f"unknown setting {key!r:.70}; known: {', '.join(SETTINGS)}")
        typ = SETTINGS[key][0]
        if typ is bool or (isinstance(value, bool) and typ is not bool) or (typ is int and isinstance(value, float)
                                                                           and not value.is_integer()):
            raise errors.BadRequest(f"{key}: expected {typ.__name__}")
        coerced: Any
        try:
            coerced = typ(value) if not isinstance(value, typ) else value
        except (TypeError, ValueError, OverflowError):
            raise errors.BadRequest(f"{key}: expected {typ.__name__}") from None
        if typ is float and coerced != coerced:  # NaN
            raise errors.BadRequest(f"{key}: expected a number")
        if typ in (int, float) and coerced < 0:
            raise errors.BadRequest(f"{key}: must not be negative")
        if key in LIMITS:
            low, high = LIMITS[key]
            if not low <= coerced <= high:
                raise errors.BadRequest(f"{key}: must lie in {low:g}..{high:g}")
        if typ is str and len(coerced) > 255:
            raise errors.BadRequest(f"{key}: at most 255 characters")
        if key in CHOICES and coerced not in CHOICES[key]:
            raise errors.BadRequest(f"{key}: one of {', '.join(CHOICES[key])}")
        if key == "default_quota":
            coerced = _quota(coerced)
        if key == "proxy_domain_suffixes":
            coerced = _suffixes(coerced)
        if key == "metrics_allow":
            coerced = _cidrs(coerced)
        return coerced

    async def update(self, changes: dict[str, Any], *, by: Principal | None = None) -> dict[str, Any]:
        """Validate every change first, then store them all (nothing changes on bad input).

        A write-only key sent back as shown (``***``) keeps its value (a settings form posted whole).
        ``by`` is the administrator asking (audited with the settings' names), None for the core.
        """
        async with recorded(self.core, by, "settings.update", ", ".join(sorted(changes))):
            return await self._update(changes)

    async def _update(self, changes: dict[str, Any]) -> dict[str, Any]:
        changes = {k: v for k, v in changes.items() if not (k in WRITE_ONLY_KEYS and v == "***")}
        coerced = {k: self.coerce(k, v) for k, v in changes.items()}
        merged = self._values | coerced
        if merged["proxy_http_port"] == merged["proxy_https_port"]:
            raise errors.BadRequest("proxy_http_port and proxy_https_port must differ")
        async with self.core.db.session() as s:
            for key, value in coerced.items():
                row = await s.get(Setting, key)
                if row is None:
                    s.add(Setting(key=key, value=value))
                else:
                    row.value = value
                note(s, SETTINGS_TOPIC, key)
        self._values.update(coerced)
        return self.public()


def _suffixes(value: str) -> str:
    """``proxy_domain_suffixes``: domain names separated by commas, stored lower-case."""
    from idcs_core.validation import domain

    parts = [p.strip().lstrip(".") for p in value.split(",") if p.strip()]
    try:
        return ",".join(domain(p) for p in parts)
    except ValueError:
        raise errors.BadRequest("proxy_domain_suffixes: comma-separated domain names such as "
                                "vps.example.net") from None
def _cidrs(value: str) -> str:
    """``metrics_allow``: comma-separated IPv4/IPv6 networks, normalised (``10.0.0.0/8,::1/128``)."""
    networks = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        try:
            networks.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise errors.BadRequest(f"metrics_allow: {part!r:.60} is not an IP network") from None
    return ",".join(networks)


def _quota(value: dict[str, Any]) -> dict[str, int]:
    """``default_quota``: only known ``max_*`` keys, each an integer -1 (unlimited) .. 2**31-1."""
    result = {}
    for key, limit in value.items():
        if key not in QUOTA_KEYS:
            raise errors.BadRequest(f"default_quota: unknown key {str(key)!r:.40}; known: {', '.join(QUOTA_KEYS)}")
        if isinstance(limit, bool) or not isinstance(limit, int | str):
            raise errors.BadRequest(f"default_quota.{key}: expected an integer")
        try:
            number = int(limit)
        except ValueError:
            raise errors.BadRequest(f"default_quota.{key}: expected an integer") from None
        if not -1 <= number <= QUOTA_MAX:
            raise errors.BadRequest(f"default_quota.{key}: must lie in -1..{QUOTA_MAX} (-1 = unlimited)")
        result[key] = number
    return result
