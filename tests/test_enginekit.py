"""The engine toolkit (idcs_core.enginekit): sessions, options, error mapping, NAT rules, host ports."""

from __future__ import annotations

import os
import socket
import time

import pytest

from idcs_core import errors
from idcs_core.enginekit import (
    SessionCache,
    local_port_holder,
    normalise_nat_rule,
    option_bool,
    option_number,
    option_values,
    port_bindable,
    translated,
)
from idcs_core.testing.server import free_port
from idcs_core.types import HostOption, HostSpec, NatRule, OptionType

HOST = HostSpec(name="h1", server_type="X", addr="x://1", user="u", password="p")


class Session:
    def __init__(self, host: HostSpec) -> None:
        self.host, self.closed = host, False


def test_session_cache_reuses_expires_and_drops() -> None:
    opened: list[Session] = []

    def open_session(host: HostSpec) -> Session:
        opened.append(Session(host))
        return opened[-1]

    cache = SessionCache(open_session, lambda s: setattr(s, "closed", True), ttl=0.3)
    first = cache.get(HOST)
    assert cache.get(HOST) is first and len(opened) == 1
    other = HostSpec(name="h1", server_type="X", addr="x://1", user="u", password="new")  # new credentials
    assert cache.get(other) is not first and len(cache) == 2
    time.sleep(0.4)
    again = cache.get(HOST)
    assert again is not first and first.closed, "an idle session was not closed and reopened"
    cache.drop(HOST)
    assert again.closed and len(cache) == 1
    cache.close_all()
    assert all(s.closed for s in opened) and len(cache) == 0


def test_session_cache_open_failure_is_not_cached() -> None:
    calls = 0

    def open_session(host: HostSpec) -> Session:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise errors.HostUnreachable("down")
        return Session(host)

    cache: SessionCache[Session] = SessionCache(open_session)
    with pytest.raises(errors.HostUnreachable):
        cache.get(HOST)
    assert isinstance(cache.get(HOST), Session) and calls == 2


def test_session_cache_discards_only_the_current_session_and_hands_sessions_over() -> None:
    cache = SessionCache(Session, lambda s: setattr(s, "closed", True))
    failed = cache.get(HOST)
    cache.discard(HOST, failed)
    assert failed.closed and len(cache) == 0, "the failed session was kept"
    fresh = cache.get(HOST)
    cache.discard(HOST, failed)  # a late report about the old session leaves the new one alone
    assert cache.get(HOST) is fresh and not fresh.closed
    other = HostSpec(name="h2", server_type="X", addr="x://2", user="u", password="p")
    kept = cache.get(other)
    assert cache.take(HOST) == [fresh] and not fresh.closed, "take closed what it handed over"
    assert len(cache) == 1 and cache.get(other) is kept and cache.take(HOST) == []


@pytest.mark.parametrize(("value", "expected"), [(True, True), ("yes", True), ("ON", True), (1, True), ("0", False),
                                                 ("no", False), (None, False), ("", False)])
def test_option_bool(value: object, expected: bool) -> None:
    assert option_bool("tls", value) is expected


def test_option_bool_and_number_refuse_nonsense_naming_the_option() -> None:
    with pytest.raises(errors.BadRequest, match="host option tls"):
        option_bool("tls", "maybe")
    assert option_number("timeout", "2.5", float, 1) == 2.5
    with pytest.raises(errors.BadRequest, match="host option timeout must be at least 1"):
        option_number("timeout", 0, int, 1)
    with pytest.raises(errors.BadRequest, match="must be a number"):
        option_number("timeout", "soon", int)


class GoneError(Exception):
    pass


def test_option_values_fill_declared_defaults_and_keep_the_rest() -> None:
    declared = [HostOption("pool", OptionType.STR, "default"), HostOption("timeout", OptionType.INT, 30),
                HostOption("verify_tls", OptionType.BOOL, True)]
    given = {"pool": "", "timeout": 0, "verify_tls": False, "extra": "kept"}
    assert option_values(declared, given) == {"pool": "default", "timeout": 0, "verify_tls": False, "extra": "kept"}
    assert option_values(declared, None) == {"pool": "default", "timeout": 30, "verify_tls": True}
    assert given["pool"] == "", "the host's own options were changed"


def test_translated_maps_in_order_and_calls_on_unreachable() -> None:
    dropped: list[bool] = []
    mapping = {GoneError: errors.VMNotFound, ConnectionError: errors.HostUnreachable,
               ValueError: lambda exc, action: errors.BadRequest(f"{action}: bad value") if "bad" in str(exc) else None}
    with pytest.raises(errors.VMNotFound, match="start vm1: no such vm"):
        with translated("start vm1", mapping):
            raise GoneError("no such vm")
    with pytest.raises(errors.HostUnreachable):
        with translated("start vm1", mapping, on_unreachable=lambda: dropped.append(True)):
            raise ConnectionRefusedError("refused")
    assert dropped == [True]
    with pytest.raises(errors.BadRequest, match="bad value"):
        with translated("x", mapping):
            raise ValueError("bad")
    with pytest.raises(errors.VMOperationFailed, match="x: other"):  # the factory declined: the default
        with translated("x", mapping):
            raise ValueError("other")
    with pytest.raises(errors.Conflict):  # business errors pass unchanged
        with translated("x", mapping):
            raise errors.Conflict("taken")
    with pytest.raises(KeyError):
        with translated("x", mapping, default=None):
            raise KeyError("k")


def test_normalise_nat_rule() -> None:
    assert normalise_nat_rule(NatRule(8080, 80, "TCP")) == NatRule(8080, 80, "tcp")
    assert normalise_nat_rule(NatRule(8080, 80, "")).protocol == "tcp"
    for bad in (NatRule(0, 80), NatRule(8080, 70000), NatRule(8080, 80, "sctp"), NatRule(True, 80)):  # type: ignore[arg-type]
        with pytest.raises(errors.BadRequest):
            normalise_nat_rule(bad)


def test_who_holds_a_local_port() -> None:
    port = free_port()
    assert port_bindable(port) and local_port_holder(port) is None
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", port))
        sock.listen(1)
        assert not port_bindable(port) and not port_bindable(port, address="127.0.0.1")
        holder = local_port_holder(port)
        assert holder is not None and holder.startswith(f"pid {os.getpid()} ("), holder
        assert local_port_holder(port, "udp") is None and port_bindable(port, "udp")
    assert port_bindable(port)
