"""The Caddy JSON of OpenIDCS's reverse proxies, built as data (never as strings).

Two servers in Caddy's ``http`` app:

- ``idcs_http`` listens on the HTTP port: a route per plain-HTTP rule (``reverse_proxy``)
  and, for each HTTPS rule, a permanent redirect to ``https://<domain>:<https port>``;
- ``idcs_https`` listens on the HTTPS port with TLS: a route per HTTPS rule. Certificates
  come from Caddy's internal CA (``tls_issuer`` ``internal``, the default: the root is in
  ``<caddy data>/caddy/pki/authorities/local/root.crt``) or from ACME (``acme``); the CA is
  never installed into the system's trust stores.

Each server ends with a catch-all 404, so a host name without a rule gets "404 no such
site" instead of Caddy's empty 200; new routes are inserted at the top (before it).
Caddy's own HTTP->HTTPS redirects are off (they would land after the catch-all) and only
HTTP/1.1 and HTTP/2 are served (no HTTP/3 on UDP).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

HTTP_SERVER = "idcs_http"
HTTPS_SERVER = "idcs_https"
CATCH_ALL = {HTTP_SERVER: "idcs-catchall-http", HTTPS_SERVER: "idcs-catchall-https"}
ROUTE_PREFIX = "idcs-proxy-"
TLS_ISSUERS = ("internal", "acme")

JSON = dict[str, Any]


@dataclass(frozen=True)
class ProxyPorts:
    """Where the proxy listens and who signs its certificates (core settings)."""

    http_port: int
    https_port: int
    tls_issuer: str = "internal"


@dataclass(frozen=True)
class CaddyRoute:
    """One ``proxys`` rule as Caddy serves it: ``rule_id`` is the database row's id."""

    rule_id: int
    domain: str
    upstream: str  # host:port Caddy dials (IPv6 in brackets)
    is_https: bool

    @property
    def route_id(self) -> str:
        """The ``@id`` of the route that proxies the domain."""
        return f"{ROUTE_PREFIX}{self.rule_id}"

    @property
    def redirect_id(self) -> str:
        """The ``@id`` of the HTTP->HTTPS redirect of an HTTPS rule."""
        return f"{ROUTE_PREFIX}{self.rule_id}-redirect"

    def ids(self) -> list[str]:
        return [self.route_id, self.redirect_id] if self.is_https else [self.route_id]

    def placements(self, ports: ProxyPorts) -> list[tuple[str, JSON]]:
        """(server, route) pairs that serve this rule."""
        proxy = {"@id": self.route_id, "match": [{"host": [self.domain]}], "terminal": True,
                 "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": self.upstream}]}]}
        if not self.is_https:
            return [(HTTP_SERVER, proxy)]
        port = "" if ports.https_port == 443 else f":{ports.https_port}"
        redirect = {"@id": self.redirect_id, "match": [{"host": [self.domain]}], "terminal": True,
                    "handle": [{"handler": "static_response", "status_code": 308,
                                "headers": {"Location": [f"https://{{http.request.host}}{port}{{http.request.uri}}"]}}]}
        return [(HTTPS_SERVER, proxy), (HTTP_SERVER, redirect)]


def catch_all(server: str) -> JSON:
    return {"@id": CATCH_ALL[server],
            "handle": [{"handler": "static_response", "status_code": 404, "body": "404 no such site\n"}]}


def apps(ports: ProxyPorts, routes: list[CaddyRoute]) -> JSON:
    """Caddy's whole ``apps`` tree for these rules (``POST /config/apps`` replaces it at once)."""
    by_server: dict[str, list[JSON]] = {HTTP_SERVER: [], HTTPS_SERVER: []}
    for route in routes:
        for server, item in route.placements(ports):
            by_server[server].append(item)
    issuer: JSON = {"module": ports.tls_issuer}
    return {
        "http": {
            "http_port": ports.http_port,
            "https_port": ports.https_port,
            "servers": {
                HTTP_SERVER: {"listen": [f":{ports.http_port}"], "protocols": ["h1"],
                              "automatic_https": {"disable_redirects": True},
                              "routes": [*by_server[HTTP_SERVER], catch_all(HTTP_SERVER)]},
                HTTPS_SERVER: {"listen": [f":{ports.https_port}"], "protocols": ["h1", "h2"],
                               "tls_connection_policies": [{}],
                               "automatic_https": {"disable_redirects": True},
                               "routes": [*by_server[HTTPS_SERVER], catch_all(HTTPS_SERVER)]},
            },
        },
        "tls": {"automation": {"policies": [{"issuers": [issuer]}]}},
        "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
    }


def route_ids(apps_json: JSON | None) -> set[str] | None:
    """The rule route ids a live ``apps`` tree serves; None when it is not OpenIDCS's
    (no catch-all routes: a Caddy that restarted empty, or someone else's configuration)."""
    servers = ((apps_json or {}).get("http") or {}).get("servers") or {}
    found: set[str] = set()
    for server, catch_id in CATCH_ALL.items():
        routes = (servers.get(server) or {}).get("routes") or []
        ids = [r.get("@id", "") for r in routes if isinstance(r, dict)]
        if catch_id not in ids:
            return None
        found.update(i for i in ids if i.startswith(ROUTE_PREFIX))
    return found


def listens_on(apps_json: JSON | None, ports: ProxyPorts) -> bool:
    """Does a live ``apps`` tree listen where the settings say (and sign as they say)?"""
    http = (apps_json or {}).get("http") or {}
    policies = (((apps_json or {}).get("tls") or {}).get("automation") or {}).get("policies") or [{}]
    issuers = policies[0].get("issuers") or [{}]
    return (http.get("http_port"), http.get("https_port"), issuers[0].get("module")) == (
        ports.http_port, ports.https_port, ports.tls_issuer)
