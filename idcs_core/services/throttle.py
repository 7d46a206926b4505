"""Login throttling per source address and per account, together.

Three counters of failed logins, each counted in a window of ``login_lock_seconds`` that
starts at the first failure:

- ``address``: failures from one source address for any account (passwords and the global
  API token alike). ``login_address_max_failures`` of them lock the address for everything.
- ``account``: failures for one account name from anywhere. ``login_max_failures`` of them
  lock the account, but only for the addresses that failed for it (``pair``): the right
  password from an address that did not fail still gets in, so nobody can lock the
  administrator out from elsewhere.
- ``pair``: failures for one account from one address.

Where the counters live:

- SQLite (one server process): in the process's memory. Counting costs no database write, so a
  flood of guesses neither fills the audit log nor contends for SQLite's write lock, and the
  event loop makes each update atomic. A restart forgets them (a lock lasts minutes anyway).
- PostgreSQL (any number of nodes): in table ``login_counters``, so a lock set through one node
  refuses on every other. A failure updates its rows in one transaction holding their row locks
  (``SELECT ... FOR UPDATE`` after an ``INSERT ... ON CONFLICT DO NOTHING``), so two nodes
  counting at once never lose a failure and only one of them starts (and audits) a lock. The
  writes are ``quiet``: they wake no cache. Times are epoch seconds (the nodes' clocks agree
  within far less than a lock). Account keys are hashes of the
lower-cased name: a name typed at the login form (maybe a password in the wrong field) is
not kept. Each lock is logged and audited once when it starts; refused attempts while
locked write nothing.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from idcs_core import errors
from idcs_core.db.models import LoginCounter
from idcs_core.db.session import quiet

if TYPE_CHECKING:
    from idcs_core.context import CoreContext

log = logging.getLogger("idcs.auth")

ADDRESS, ACCOUNT, PAIR = "address", "account", "pair"
MAX_COUNTERS = 200_000  # expired counters are dropped when there are more


def account_key(username: str) -> str:
    return hashlib.sha256(username.strip().lower().encode("utf-8", "replace")).hexdigest()[:40]


def _pair_key(username: str, source_ip: str) -> str:
    return hashlib.sha256(f"{username.strip().lower()}\0{source_ip}".encode("utf-8", "replace")).hexdigest()[:40]


@dataclass
class Counter:
    failures: int
    window_start: float
    locked_until: float = 0.0


def _db_key(key: tuple[str, str]) -> str:
    return f"{key[0]}:{key[1]}"[:96]


class Throttle:
    def __init__(self, core: CoreContext) -> None:
        self.core = core
        self._counters: dict[tuple[str, str], Counter] = {}  # SQLite only
        self._pruned = 0.0  # when expired rows of ``login_counters`` were last deleted

    @property
    def _shared(self) -> bool:
        return self.core.db.shared

    def _window(self) -> float:
        return float(self.core.settings.get("login_lock_seconds"))

    def _now(self) -> float:
        return time.time() if self._shared else time.monotonic()

    def _keys(self, source_ip: str, username: str | None) -> list[tuple[str, str]]:
        keys = [(ADDRESS, source_ip)]
        if username is not None:
            keys += [(ACCOUNT, account_key(username)), (PAIR, _pair_key(username, source_ip))]
        return keys

    def _over(self, counter: Counter | None, now: float) -> bool:
        """True when ``counter``'s window and lock are both over (it counts as absent)."""
        return counter is not None and counter.locked_until <= now and counter.window_start + self._window() <= now

    def _live(self, key: tuple[str, str], now: float) -> Counter | None:
        """The counter of ``key`` unless its window and lock are over (memory)."""
        counter = self._counters.get(key)
        if self._over(counter, now):
            del self._counters[key]
            return None
        return counter

    async def _read(self, keys: list[tuple[str, str]], now: float) -> dict[tuple[str, str], Counter]:
        """The live counters of ``keys``."""
        if not self._shared:
            return {k: c for k in keys if (c := self._live(k, now)) is not None}
        names = {_db_key(k): k for k in keys}
        async with self.core.db.session() as s:
            rows = (await s.execute(select(LoginCounter).where(LoginCounter.key.in_(names)))).scalars()
            found = {names[r.key]: Counter(r.failures, r.window_start, r.locked_until) for r in rows}
        return {k: c for k, c in found.items() if not self._over(c, now)}

    async def check(self, source_ip: str, username: str | None) -> None:
        """Raise ``AccountLocked`` (2004, HTTP 429) if this address, or this account for this
        address, is locked now."""
        now = self._now()
        keys = self._keys(source_ip, username)
        live = await self._read(keys, now)
        address = live.get(keys[0])
        if address and address.locked_until > now:
            raise errors.AccountLocked("too many failed logins from your address; try again later")
        if username is None:
            return
        account = live.get(keys[1])
        if account and account.locked_until > now and keys[2] in live:
            raise errors.AccountLocked()

    def _count(self, counter: Counter, limit: int, now: float) -> bool:
        """Count one failure on ``counter``; True when that starts a lock."""
        counter.failures += 1
        if limit and counter.failures >= limit and counter.locked_until <= now:
            counter.locked_until = now + self._window()
            counter.failures, counter.window_start = 0, now
            return True
        return False

    async def failed(self, source_ip: str, username: str | None) -> None:
        """Count one failure on every counter; log and audit a lock when one starts."""
        settings = self.core.settings
        limits = {ADDRESS: int(settings.get("login_address_max_failures")),
                  ACCOUNT: int(settings.get("login_max_failures")), PAIR: 0}
        now = self._now()
        keys = self._keys(source_ip, username)
        if self._shared:
            started = await self._count_shared(keys, limits, now)
        else:
            if len(self._counters) > MAX_COUNTERS:
                for key in list(self._counters):
                    self._live(key, now)
            started = []
            for key in keys:
                counter = self._live(key, now)
                if counter is None:
                    counter = self._counters[key] = Counter(0, now)
                if self._count(counter, limits[key[0]], now):
                    started.append(key)
        for scope, ref in started:
            what = "source address" if scope == ADDRESS else "account"
            log.warning("login: %s locked for %s s after %d failures (address %s)", what,
                        settings.get("login_lock_seconds"), limits[scope], source_ip)
            await self.core.audit(None, "login.locked", f"{what} {source_ip}" if scope == ADDRESS
                                  else f"account ref {ref[:12]}", "failed", f"{limits[scope]} failed logins",
                                  source_ip)

    async def _count_shared(self, keys: list[tuple[str, str]], limits: dict[str, int],
                            now: float) -> list[tuple[str, str]]:
        """``failed`` on ``login_counters``: the rows of ``keys`` locked, counted, written back."""
        names = {_db_key(k): k for k in keys}
        started = []
        async with self.core.db.session() as s:
            quiet(s)
            await s.execute(pg_insert(LoginCounter).values(
                [{"key": n, "failures": 0, "window_start": now, "locked_until": 0.0} for n in sorted(names)]
            ).on_conflict_do_nothing(index_elements=["key"]))
            rows = (await s.execute(select(LoginCounter).where(LoginCounter.key.in_(names))
                                    .order_by(LoginCounter.key).with_for_update())).scalars()
            for row in rows:
                counter = Counter(row.failures, row.window_start, row.locked_until)
                if self._over(counter, now):
                    counter = Counter(0, now)
                key = names[row.key]
                if self._count(counter, limits[key[0]], now):
                    started.append(key)
                row.failures, row.window_start, row.locked_until = (counter.failures, counter.window_start,
                                                                    counter.locked_until)
            if now - self._pruned > self._window():  # rows whose window and lock are over go now and then
                self._pruned = now
                await s.execute(delete(LoginCounter).where(LoginCounter.locked_until <= now,
                                                           LoginCounter.window_start <= now - self._window()))
        return sorted(started, key=keys.index)

    async def succeeded(self, source_ip: str, username: str) -> None:
        """A success forgets this address's failures for the account (never a running lock)."""
        now = self._now()
        keys = self._keys(source_ip, username)
        if self._shared:
            async with self.core.db.session() as s:
                quiet(s)
                await s.execute(delete(LoginCounter).where(LoginCounter.key.in_([_db_key(k) for k in keys]),
                                                           LoginCounter.locked_until <= now))
            return
        for key in keys:
            counter = self._counters.get(key)
            if counter is not None and counter.locked_until <= now:
                del self._counters[key]
