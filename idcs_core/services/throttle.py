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

The counters live in the server process's memory (one server process per database, as the
README says): counting costs no database write, so a flood of guesses neither fills the
audit log nor contends for SQLite's write lock, and the event loop makes each update atomic.
A restart forgets them (a lock lasts minutes anyway). Account keys are hashes of the
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

from idcs_core import errors

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


class Throttle:
    def __init__(self, core: CoreContext) -> None:
        self.core = core
        self._counters: dict[tuple[str, str], Counter] = {}

    def _window(self) -> float:
        return float(self.core.settings.get("login_lock_seconds"))

    def _keys(self, source_ip: str, username: str | None) -> list[tuple[str, str]]:
        keys = [(ADDRESS, source_ip)]
        if username is not None:
            keys += [(ACCOUNT, account_key(username)), (PAIR, _pair_key(username, source_ip))]
        return keys

    def _live(self, key: tuple[str, str], now: float) -> Counter | None:
        """The counter of ``key`` unless its window and lock are over."""
        counter = self._counters.get(key)
        if counter is not None and counter.locked_until <= now and counter.window_start + self._window() <= now:
            del self._counters[key]
            return None
        return counter

    def check(self, source_ip: str, username: str | None) -> None:
        """Raise ``AccountLocked`` (2004, HTTP 429) if this address, or this account for this
        address, is locked now."""
        now = time.monotonic()
        address = self._live((ADDRESS, source_ip), now)
        if address and address.locked_until > now:
            raise errors.AccountLocked("too many failed logins from your address; try again later")
        if username is None:
            return
        account = self._live((ACCOUNT, account_key(username)), now)
        failed_here = self._live((PAIR, _pair_key(username, source_ip)), now) is not None
        if account and account.locked_until > now and failed_here:
            raise errors.AccountLocked()

    async def failed(self, source_ip: str, username: str | None) -> None:
        """Count one failure on every counter; log and audit a lock when one starts."""
        settings = self.core.settings
        limits = {ADDRESS: int(settings.get("login_address_max_failures")),
                  ACCOUNT: int(settings.get("login_max_failures")), PAIR: 0}
        now = time.monotonic()
        if len(self._counters) > MAX_COUNTERS:
            for key in list(self._counters):
                self._live(key, now)
        started = []
        for key in self._keys(source_ip, username):
            counter = self._live(key, now)
            if counter is None:
                counter = self._counters[key] = Counter(0, now)
            counter.failures += 1
            limit = limits[key[0]]
            if limit and counter.failures >= limit and counter.locked_until <= now:
                counter.locked_until = now + self._window()
                counter.failures, counter.window_start = 0, now
                started.append(key)
        for scope, ref in started:
            what = "source address" if scope == ADDRESS else "account"
            log.warning("login: %s locked for %s s after %d failures (address %s)", what,
                        settings.get("login_lock_seconds"), limits[scope], source_ip)
            await self.core.audit(None, "login.locked", f"{what} {source_ip}" if scope == ADDRESS
                                  else f"account ref {ref[:12]}", "failed", f"{limits[scope]} failed logins",
                                  source_ip)

    def succeeded(self, source_ip: str, username: str) -> None:
        """A success forgets this address's failures for the account (never a running lock)."""
        now = time.monotonic()
        for key in self._keys(source_ip, username):
            counter = self._counters.get(key)
            if counter is not None and counter.locked_until <= now:
                del self._counters[key]
