"""NAT port forwards as nftables DNAT rules in a table the engine owns, and the VM's addresses.

The table (``ip <nft_table>``) has three NAT chains: ``prerouting`` (traffic from outside),
``output`` (connections made on the host itself) and ``postrouting`` (masquerade for
connections from 127.0.0.0/8, which the bridge accepts with ``route_localnet``). Each forward
is one rule in ``prerouting`` and one in ``output``, both carrying the comment
``idcs:<vm>:<proto>:<host_port>:<vm_port>``: the engine lists, removes and reconciles exactly
those and never touches another table. The nft script travels on stdin and is made only of
validated names, integers and addresses.
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass
from typing import Any

from idcs_core import errors
from idcs_core.enginekit import local_port_holder, normalise_nat_rule
from idcs_core.types import IPAddress, NatRule
from idcs_lxc import naming
from idcs_lxc.client import Session

CHAINS = ("prerouting", "output")
MASQ = "idcs-masq"


@dataclass(frozen=True)
class Forward:
    """One of the engine's forwards as it is in the table."""

    vm: str
    protocol: str
    host_port: int
    vm_port: int
    target: str
    handles: tuple[tuple[str, int], ...]  # (chain, handle) of each of its rules


def _nft(session: Session, script: str, what: str) -> None:
    session.check(["nft", "-f", "-"], what, stdin=script.encode())


def ensure_table(session: Session) -> None:
    """Create the table and chains if missing (``add`` is idempotent), and let 127.0.0.1 reach the bridge."""
    t, bridge = session.opts.nft_table, session.opts.bridge
    _nft(session, "\n".join([
        f"add table ip {t}",
        f"add chain ip {t} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}",
        f"add chain ip {t} output {{ type nat hook output priority -100; policy accept; }}",
        f"add chain ip {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}",
    ]) + "\n", "create the nftables table")
    if not any(r.get("comment") == MASQ for r in _rules(session) if r.get("chain") == "postrouting"):
        _nft(session, f'add rule ip {t} postrouting ip saddr 127.0.0.0/8 oifname "{bridge}" masquerade '
                      f'comment "{MASQ}"\n', "add the loopback masquerade")
    session.run(["sysctl", "-q", "-w", f"net.ipv4.conf.{bridge}.route_localnet=1"])


def _rules(session: Session) -> list[dict[str, Any]]:
    result = session.run(["nft", "-j", "-a", "list", "table", "ip", session.opts.nft_table])
    if result.code != 0:
        return []  # no table yet: no rules
    try:
        items = json.loads(result.out).get("nftables", [])
    except ValueError as exc:
        raise errors.VMOperationFailed(f"nft printed what is not JSON: {result.out[:200]}") from exc
    return [item["rule"] for item in items if "rule" in item]


def _target(rule: dict[str, Any]) -> str:
    for expr in rule.get("expr", []):
        if "dnat" in expr:
            return str(expr["dnat"].get("addr", ""))
    return ""


def forwards(session: Session) -> list[Forward]:
    """Every forward of the engine's table (all VMs), from one ``nft list``."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for rule in _rules(session):
        comment = str(rule.get("comment") or "")
        if comment.startswith("idcs:") and rule.get("chain") in CHAINS:
            grouped.setdefault(comment, []).append(rule)
    found: list[Forward] = []
    for comment, rules in grouped.items():
        parts = comment.split(":")
        if len(parts) != 5:
            continue
        _, vm, protocol, host_port, vm_port = parts
        found.append(Forward(vm, protocol, int(host_port), int(vm_port), _target(rules[0]),
                             tuple((r["chain"], int(r["handle"])) for r in rules)))
    return found


def _delete(session: Session, fwds: list[Forward]) -> None:
    lines = [f"delete rule ip {session.opts.nft_table} {chain} handle {handle}"
             for f in fwds for chain, handle in f.handles]
    if lines:
        _nft(session, "\n".join(lines) + "\n", "remove NAT rules")


def _add_lines(session: Session, vm: str, protocol: str, host_port: int, vm_port: int, target: str) -> list[str]:
    comment = naming.rule_comment(vm, protocol, host_port, vm_port)
    return [f"add rule ip {session.opts.nft_table} {chain} fib daddr type local {protocol} dport {host_port} "
            f'dnat to {target}:{vm_port} comment "{comment}"' for chain in CHAINS]


def _port_holder(session: Session, protocol: str, port: int) -> str | None:
    """Who listens on ``port`` of the host: the toolkit's ``local_port_holder`` on this machine
    (it names the program), ``ss`` over SSH; None when nothing does."""
    if session.addr.local:
        return local_port_holder(port, protocol)
    result = session.run(["ss", "-H", "-l", "-n", "-t" if protocol == "tcp" else "-u"])
    for line in result.out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3].rsplit(":", 1)[-1] == str(port):
            return "a program on the host"
    return None


def vm_address(session: Session, name: str, wait: float = 20.0) -> str:
    """The container's IPv4 address on the bridge (waits for its DHCP lease)."""
    from idcs_lxc.lifecycle import read_status

    deadline = time.monotonic() + wait
    while True:
        info = read_status(session, name)
        v4 = [ip for ip in info.ip_addresses if _is_v4(ip)]
        if v4:
            return v4[0]
        if info.status != "running":
            raise errors.VMOperationFailed(f"{name} is not running: start it so it has an address to forward to")
        if time.monotonic() > deadline:
            raise errors.VMOperationFailed(f"{name} has no IPv4 address after {wait:.0f} s (no DHCP lease?)")
        time.sleep(0.5)


def _is_v4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def nat_add(session: Session, name: str, rule: NatRule) -> NatRule:
    """Forward ``rule.host_port`` to the container; 4002 if the port is taken on the host."""
    rule = normalise_nat_rule(rule)
    protocol = rule.protocol
    ensure_table(session)
    existing = forwards(session)
    mine = [f for f in existing if (f.vm, f.protocol, f.host_port, f.vm_port) ==
            (name, protocol, rule.host_port, rule.vm_port)]
    if any(f.protocol == protocol and f.host_port == rule.host_port for f in existing if f not in mine):
        raise errors.Conflict(f"host port {rule.host_port}/{protocol} is already forwarded to another container")
    holder = None if mine else _port_holder(session, protocol, rule.host_port)
    if holder is not None:
        raise errors.Conflict(f"host port {rule.host_port}/{protocol} is held by a program on the host ({holder})")
    target = vm_address(session, name)
    if mine and all(f.target == target for f in mine):
        return NatRule(rule.host_port, rule.vm_port, protocol, target)
    _delete(session, mine)
    _nft(session, "\n".join(_add_lines(session, name, protocol, rule.host_port, rule.vm_port, target)) + "\n",
         f"forward port {rule.host_port}")
    return NatRule(rule.host_port, rule.vm_port, protocol, target)


def nat_remove(session: Session, name: str, rule: NatRule) -> None:
    rule = normalise_nat_rule(rule)
    protocol = rule.protocol
    _delete(session, [f for f in forwards(session) if (f.vm, f.protocol, f.host_port, f.vm_port) ==
                      (name, protocol, rule.host_port, rule.vm_port)])


def nat_sync(session: Session, name: str, rules: list[NatRule]) -> None:
    """Make the container's forwards exactly ``rules`` (pointing at its current address)."""
    ensure_table(session)
    wanted = {(r.protocol, r.host_port, r.vm_port): r for r in map(normalise_nat_rule, rules)}
    current = [f for f in forwards(session) if f.vm == name]
    target = ""
    if wanted:
        try:
            target = vm_address(session, name, wait=10)
        except errors.VMOperationFailed:
            target = next((r.lan_addr for r in rules if r.lan_addr), "")
    stale = [f for f in current if (f.protocol, f.host_port, f.vm_port) not in wanted or
             (target and f.target != target)]
    kept = {(f.protocol, f.host_port, f.vm_port) for f in current if f not in stale}
    _delete(session, stale)
    lines: list[str] = []
    if target:
        for key in wanted:
            if key not in kept:
                lines += _add_lines(session, name, key[0], key[1], key[2], target)
    if lines:
        _nft(session, "\n".join(lines) + "\n", f"restore the NAT rules of {name}")


def repoint(session: Session, name: str) -> None:
    """After a start: point the container's forwards at its address if it changed."""
    current = [f for f in forwards(session) if f.vm == name]
    if not current:
        return
    rules = [NatRule(f.host_port, f.vm_port, f.protocol, f.target) for f in current]
    nat_sync(session, name, rules)


def remove_vm_rules(session: Session, name: str) -> None:
    _delete(session, [f for f in forwards(session) if f.vm == name])


def ip_list(session: Session, name: str) -> list[IPAddress]:
    """The container's addresses as LXC reports them."""
    from idcs_lxc.lifecycle import read_status

    return [IPAddress(address=ip, version=4 if _is_v4(ip) else 6, nic="eth0")
            for ip in read_status(session, name).ip_addresses]
