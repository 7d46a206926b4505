"""The engine toolkit: what every engine needs and should not write again.

Import it beside ``idcs_core.hookspecs``, ``idcs_core.types`` and ``idcs_core.errors``; it
depends on nothing else of the core and never sees the database or HTTP.

- ``SessionCache``: one client/session per host, opened on first use, shared by threads,
  reopened after ``ttl`` seconds idle, closed on ``drop(host)`` (``host_close``) and ``close_all``;
  ``discard(host, session)`` drops one that failed, ``take(host)`` hands them over for an async close.
- ``option_bool`` / ``option_number``: host options typed the same way in every engine;
  ``option_values``: a host's options with the declared defaults filled in.
- ``translated``: a context manager turning back-end exceptions into business errors by a mapping.
- ``normalise_nat_rule``: a ``NatRule`` checked (ports 1-65535) with its protocol lower-cased.
- ``port_bindable`` / ``local_port_holder``: is a host port free on this machine, and who holds it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from idcs_core import errors
from idcs_core.types import HostOption, HostSpec, NatRule

__all__ = ["SessionCache", "local_port_holder", "normalise_nat_rule", "option_bool", "option_number",
           "option_values", "port_bindable", "translated"]

S = TypeVar("S")
N = TypeVar("N", int, float)

# ---------------------------------------------------------------------- sessions


@dataclass
class _Entry(Generic[S]):
    host: HostSpec
    session: S
    used: float


class SessionCache(Generic[S]):
    """One session (SDK client, login, connection pool) per host, shared by the engine's threads.

    ``open(host)`` makes a session (raise ``errors.HostUnreachable`` when it cannot) and
    ``close(session)`` releases one (its exceptions are swallowed: closing a dead transport may
    fail). ``key(host)`` tells sessions apart (default: the ``HostSpec`` itself, i.e. name,
    address and credentials; add the options that change the connection). A session unused for
    ``ttl`` seconds is closed and reopened on its next use (None: kept until dropped).
    Opening happens outside the cache's lock: two threads may open one at once, the first kept.
    """

    def __init__(self, open: Callable[[HostSpec], S], close: Callable[[S], None] | None = None, *,
                 ttl: float | None = None, key: Callable[[HostSpec], Hashable] | None = None) -> None:
        self._open, self._close = open, close
        self._key: Callable[[HostSpec], Hashable] = key or (lambda host: host)
        self.ttl = ttl
        self._entries: dict[Hashable, _Entry[S]] = {}
        self._lock = threading.Lock()

    def get(self, host: HostSpec) -> S:
        """The host's session, opened if there is none (or the one there sat idle too long)."""
        key, now = self._key(host), time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and (self.ttl is None or now - entry.used < self.ttl):
                entry.used = now
                return entry.session
            stale = self._entries.pop(key, None)
        if stale is not None:
            self._quietly_close(stale.session)
        session = self._open(host)
        with self._lock:
            kept = self._entries.setdefault(key, _Entry(host, session, time.monotonic()))
        if kept.session is not session:  # another thread opened one first
            self._quietly_close(session)
        return kept.session

    def drop(self, host: HostSpec) -> None:
        """Close and forget every session of ``host`` (same name, address and credentials); never raises."""
        with self._lock:
            gone = [self._entries.pop(k) for k, e in list(self._entries.items()) if e.host == host]
        for entry in gone:
            self._quietly_close(entry.session)

    def discard(self, host: HostSpec, session: S) -> None:
        """Close and forget ``session`` if it is still the one cached for ``host`` (it failed
        mid-call, or the engine found it dead); one another thread opened since stays. Never raises."""
        key = self._key(host)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.session is not session:
                return
            del self._entries[key]
        self._quietly_close(session)

    def take(self, host: HostSpec) -> list[S]:
        """Forget every session of ``host`` without closing them, and hand them to the caller
        (an async engine awaits their close; ``drop`` can only close synchronously)."""
        with self._lock:
            gone = [self._entries.pop(k) for k, e in list(self._entries.items()) if e.host == host]
        return [entry.session for entry in gone]

    def close_all(self) -> None:
        """Close every session (server shut-down)."""
        with self._lock:
            gone, self._entries = list(self._entries.values()), {}
        for entry in gone:
            self._quietly_close(entry.session)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _quietly_close(self, session: S) -> None:
        if self._close is not None:
            with contextlib.suppress(Exception):
                self._close(session)


# ---------------------------------------------------------------------- host options

_YES = frozenset({"1", "true", "yes", "on", "y"})
_NO = frozenset({"0", "false", "no", "off", "n"})


def option_bool(name: str, value: Any, default: bool = False) -> bool:
    """A yes/no host option: booleans, ``true/false``, ``yes/no``, ``on/off``, ``1/0`` (any case);
    None or "" is ``default``; anything else is a ``BadRequest`` naming the option."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    text = str(value).strip().lower()
    if text in _YES:
        return True
    if text in _NO:
        return False
    raise errors.BadRequest(f"host option {name} must be true or false, not {value!r}")


def option_number(name: str, value: Any, kind: type[N], minimum: float | None = None) -> N:
    """A numeric host option of type ``kind`` (int or float), at least ``minimum``; ``BadRequest`` naming it."""
    if isinstance(value, bool):
        raise errors.BadRequest(f"host option {name} must be a number, not {value!r}")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise errors.BadRequest(f"host option {name} must be a number, not {value!r}") from None
    if minimum is not None and number < minimum:
        raise errors.BadRequest(f"host option {name} must be at least {minimum}")
    return number


def option_values(declared: Iterable[HostOption], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The host's options with each declared option's ``default`` where the value is missing,
    None or "" (the core fills defaults in on save; a host saved before an option existed, or a
    test's bare ``HostSpec``, may still lack them). Keys not declared are kept as given."""
    values = dict(given or {})
    for option in declared:
        if values.get(option.name) in (None, ""):
            values[option.name] = option.default
    return values


# ---------------------------------------------------------------------- errors

ErrorFactory = type[errors.IDCSError] | Callable[[BaseException, str], errors.IDCSError | None]
"""What ``translated`` makes of an exception: a business error class (built with the message
``"<action>: <explanation>"``), or a function ``(exc, action) -> error`` (None: try the next entry)."""


def _explain(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


@contextlib.contextmanager
def translated(action: str, mapping: Mapping[type[BaseException] | tuple[type[BaseException], ...], ErrorFactory],
               *, explain: Callable[[BaseException], str] = _explain,
               default: type[errors.IDCSError] | None = errors.VMOperationFailed,
               on_unreachable: Callable[[], None] | None = None) -> Iterator[None]:
    """Run back-end calls; re-raise what they raise as business errors.

    ``mapping`` is searched in order: the first entry whose exception type matches and whose
    factory gives an error wins. Business errors raised inside pass unchanged. Unmatched
    exceptions become ``default`` (None: they propagate as they are). ``on_unreachable`` runs
    before a ``HostUnreachable`` leaves the block (e.g. drop the host's cached session, so
    the next call connects afresh)::

        with translated(f"start {vm_uuid}", {NotFound: errors.VMNotFound, ConnectionError: errors.HostUnreachable}):
            sdk.start(vm_uuid)
    """
    try:
        yield
    except errors.IDCSError as exc:
        if isinstance(exc, errors.HostUnreachable) and on_unreachable is not None:
            on_unreachable()
        raise
    except Exception as exc:
        error: errors.IDCSError | None = None
        for types, factory in mapping.items():
            if not isinstance(exc, types):
                continue
            if isinstance(factory, type):
                error = factory(f"{action}: {explain(exc)}")
            else:
                error = factory(exc, action)
            if error is not None:
                break
        if error is None:
            if default is None:
                raise
            error = default(f"{action}: {explain(exc)}")
        if isinstance(error, errors.HostUnreachable) and on_unreachable is not None:
            on_unreachable()
        raise error from exc


# ---------------------------------------------------------------------- NAT

PROTOCOLS = ("tcp", "udp")


def normalise_nat_rule(rule: NatRule) -> NatRule:
    """``rule`` with its protocol lower-cased (empty: tcp), checked: tcp or udp, ports 1-65535
    (``BadRequest`` naming the field otherwise)."""
    proto = (rule.protocol or "tcp").lower()
    if proto not in PROTOCOLS:
        raise errors.BadRequest(f"protocol must be tcp or udp, not {rule.protocol!r}")
    for name, port in (("host_port", rule.host_port), ("vm_port", rule.vm_port)):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise errors.BadRequest(f"{name} must be a port number 1-65535, not {port!r}")
    return NatRule(rule.host_port, rule.vm_port, proto, rule.lan_addr)


def port_bindable(port: int, protocol: str = "tcp", address: str = "0.0.0.0") -> bool:
    """True if a socket of this machine could bind ``address``:``port`` for ``protocol`` now
    (only meaningful when the back end's host is this machine). Nothing stays bound."""
    host = address.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


_LISTENING = {"tcp": "0A", "udp": "07"}  # TCP_LISTEN; an unconnected (bound) UDP socket


def _socket_inodes(port: int, protocol: str, proc: str) -> set[str]:
    found: set[str] = set()
    for table in (f"{proc}/net/{protocol}", f"{proc}/net/{protocol}6"):
        try:
            with open(table) as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTENING[protocol] and \
                    int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


def local_port_holder(port: int, protocol: str = "tcp", proc: str = "/proc") -> str | None:
    """Who listens on ``port`` of this machine: ``"pid 123 (caddy)"``, ``"a socket of another
    namespace or user"`` when the owner cannot be seen, or None when nothing listens there.

    For engines whose hosts are this machine (a local socket): name the program in the 4002
    message, so an operator knows what to stop."""
    inodes = _socket_inodes(port, protocol, proc)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for pid in filter(str.isdigit, os.listdir(proc)):
        try:
            fds = os.listdir(f"{proc}/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{proc}/{pid}/fd/{fd}") in targets:
                    with open(f"{proc}/{pid}/comm") as fh:
                        return f"pid {pid} ({fh.read().strip()})"
            except OSError:
                continue
    return "a socket of another namespace or user"
