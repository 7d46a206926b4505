"""Reverse proxies for every engine: the core drives a real Caddy through its admin API.

``proxys`` routes of hosts whose engine has no ``proxy_add`` hook are served by a Caddy
the core manages (``manager.ProxyManager``): each rule is one route, added and removed
live by its ``@id`` (no reload, no configuration file written), and the whole route set is
rebuilt from the database at server start and whenever that Caddy comes back empty.

    endpoint.py   where a host's Caddy admin API lives (the per-host setting ``proxy_endpoint``)
    config.py     the Caddy JSON: servers, routes, TLS with Caddy's internal CA
    admin.py      a small async client of Caddy's admin API
    local.py      the server's own Caddy process (``local``): private data dir, stopped by PID
    upstream.py   which address and port reach the VM from Caddy
    manager.py    add / remove / reconcile / watch, one lock per endpoint
"""
