"""A VM's IP addresses, NAT port forwards and reverse proxies."""

from __future__ import annotations

from typing import Any

from idcs_core.api.routing import ADMIN, Ctx, Router
from idcs_core.api.schemas import DomainCheck, IPAdd, NatAdd, PortCheck, ProxyAdd
from idcs_core.services import network, reverse_proxies, vm_ips

router = Router("network")

NAT_ITEM = {"type": "object", "properties": {
    "rule_index": {"type": "integer", "description": "stable per VM; does not shift when another rule goes"},
    "host_port": {"type": "integer"}, "vm_port": {"type": "integer"}, "protocol": {"type": "string"},
    "wan_port": {"type": "integer", "description": "alias of host_port"},
    "lan_port": {"type": "integer", "description": "alias of vm_port"}, "lan_addr": {"type": "string"},
    "nat_tips": {"type": "string"}}}


@router.get("/api/client/ipaddr/detail/{hs_name}/{vm_uuid}", vm_scoped=True)
async def list_ips(ctx: Ctx, hs_name: str, vm_uuid: str) -> Any:
    """The VM's addresses: those assigned through OpenIDCS (with ``ip_index``) and those
    the engine reports (``managed: false``)."""
    return await vm_ips.list_ips(ctx.core, ctx.user, hs_name, vm_uuid)


@router.post("/api/client/ipaddr/create/{hs_name}/{vm_uuid}", body=IPAdd)
async def add_ip(ctx: Ctx, hs_name: str, vm_uuid: str, body: IPAdd) -> Any:
    """Add an address (optional nic_type nat/pub, ip4_addr, ip6_addr, mac_addr, nic_tips)."""
    return await vm_ips.add_ip(ctx.core, ctx.user, hs_name, vm_uuid, body.model_dump())  # task ip_add: audited


@router.delete("/api/client/ipaddr/delete/{hs_name}/{vm_uuid}/{ip_index}")
async def delete_ip(ctx: Ctx, hs_name: str, vm_uuid: str, ip_index: str) -> Any:
    """Remove an address added through OpenIDCS."""
    await vm_ips.delete_ip(ctx.core, ctx.user, hs_name, vm_uuid, int(ip_index))  # task ip_delete: audited
    return None


@router.get("/api/client/natget/{hs_name}/{vm_uuid}", vm_scoped=True, data={"type": "array", "items": NAT_ITEM})
async def list_nat(ctx: Ctx, hs_name: str, vm_uuid: str) -> Any:
    """The VM's NAT port-forward rules."""
    return await network.list_nat(ctx.core, ctx.user, hs_name, vm_uuid)


@router.post("/api/client/natadd/{hs_name}/{vm_uuid}", body=NatAdd, vm_scoped=True, data=NAT_ITEM)
async def add_nat(ctx: Ctx, hs_name: str, vm_uuid: str, body: NatAdd) -> Any:
    """Forward host_port on the host to vm_port in the VM (tcp/udp).

    Normal users may only forward host ports of the host's ports_start..ports_close
    range, or of 10000-59999 when the host sets none (400 otherwise); administrators
    may forward any port. host_port 0 or empty (also as wan_port) picks a free port of
    that range and returns it; a port the host reports taken by another program is
    skipped (up to 20 are tried). Port already forwarded: 4002 (HTTP 409)."""
    fields = body.model_dump()
    # a task of kind nat_add per try: its audit entry says how it ended
    return await network.add_nat(ctx.core, ctx.user, hs_name, vm_uuid, fields)


@router.delete("/api/client/natdel/{hs_name}/{vm_uuid}/{rule_index}", vm_scoped=True)
async def delete_nat(ctx: Ctx, hs_name: str, vm_uuid: str, rule_index: str) -> Any:
    """Remove a NAT rule by its rule_index."""
    await network.delete_nat(ctx.core, ctx.user, hs_name, vm_uuid, int(rule_index))  # task nat_delete: audited
    return None


@router.get("/api/client/proxys/detail/{hs_name}/{vm_uuid}", vm_scoped=True)
async def list_proxies(ctx: Ctx, hs_name: str, vm_uuid: str) -> Any:
    """The VM's reverse-proxy (web domain) entries."""
    return await reverse_proxies.list_proxies(ctx.core, ctx.user, hs_name, vm_uuid)


@router.post("/api/client/proxys/create/{hs_name}/{vm_uuid}", body=ProxyAdd, vm_scoped=True)
async def add_proxy(ctx: Ctx, hs_name: str, vm_uuid: str, body: ProxyAdd) -> Any:
    """Serve a domain (domain or web_addr) from the VM's lan_port (default 80).

    Through the engine's own reverse proxy where it has one, else through the core's Caddy
    (the host's ``config.proxy_endpoint``; listen ports are the settings ``proxy_http_port``
    and ``proxy_https_port``). ``is_https``: TLS with a certificate of Caddy's internal CA (or
    ACME, setting ``proxy_tls_issuer``), plain HTTP redirected to it. Caddy dials ``lan_addr``
    if given (a normal user may only name one of the VM's addresses), else ``public_addr``
    plus the host port of a NAT rule forwarding TCP to ``lan_port``, else the VM's own
    address; none: 400. Domain taken: 4002; Caddy refusing or unreachable: 1005 / 1003,
    and nothing is recorded."""
    # a task of kind proxy_add, waited on: its audit entry says how it ended
    return await reverse_proxies.add_proxy(ctx.core, ctx.user, hs_name, vm_uuid, body.model_dump())


@router.delete("/api/client/proxys/delete/{hs_name}/{vm_uuid}/{proxy_index}", vm_scoped=True)
async def delete_proxy(ctx: Ctx, hs_name: str, vm_uuid: str, proxy_index: str) -> Any:
    """Remove a reverse-proxy entry by its proxy_index."""
    await reverse_proxies.delete_proxy(ctx.core, ctx.user, hs_name, vm_uuid, int(proxy_index))  # task: audited
    return None


@router.get("/api/nat/check", auth=ADMIN, body=PortCheck, query={"port": "int", "protocol": "tcp/udp",
                                                                "hs_name": "optional host"})
async def nat_check(ctx: Ctx, body: PortCheck) -> Any:
    """Is this host port free for a new NAT rule? (billing dialect)"""
    used = await network.port_in_use(ctx.core, body.hs_name, body.port, body.protocol)
    return {"port": body.port, "protocol": body.protocol, "available": not used, "in_use": used}


@router.get("/api/proxy/check", auth=ADMIN, body=DomainCheck, query={"domain": "the domain"})
async def proxy_check(ctx: Ctx, body: DomainCheck) -> Any:
    """Is this domain free for a new reverse proxy? (billing dialect)"""
    used = await reverse_proxies.domain_in_use(ctx.core, body.domain)
    return {"domain": body.domain, "available": not used, "in_use": used}
