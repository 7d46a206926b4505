"""A small async client of Caddy's admin API (``/config/...`` and ``/id/...``).

Every change is one request that Caddy applies as a graceful reload (15-40 ms). A Caddy
that cannot be reached raises ``ProxyUnreachable`` (1003); one that refuses a change
(bad value, port in use) raises ``ProxyRefused`` (1005) with Caddy's own message.
"""

from __future__ import annotations

from typing import Any

import httpx

from idcs_core import errors

# Caddy checks the Host header of admin requests against its ``admin.origins``: the local
# Caddy is configured to accept this name on its unix socket.
UNIX_ORIGIN = "caddy-admin"
TIMEOUT = 10.0


class ProxyUnreachable(errors.HostUnreachable):
    """The reverse proxy's admin API does not answer."""


class ProxyRefused(errors.VMOperationFailed):
    """Caddy answered but refused the change."""


class CaddyAdmin:
    """The admin API at ``url`` (``http://host:port``) or on the unix socket ``socket_path``."""

    def __init__(self, *, url: str = "", socket_path: str = "", timeout: float = TIMEOUT) -> None:
        # One connection per request: Caddy restarts its admin listener on every configuration
        # change, closing the connection a pool would reuse.
        transport = httpx.AsyncHTTPTransport(uds=socket_path or None,
                                             limits=httpx.Limits(max_keepalive_connections=0))
        self.where = f"unix:{socket_path}" if socket_path else url
        self.http = httpx.AsyncClient(transport=transport, base_url=f"http://{UNIX_ORIGIN}" if socket_path else url,
                                      timeout=timeout, trust_env=False)

    async def close(self) -> None:
        await self.http.aclose()

    async def _request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        try:
            resp = await self.http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ProxyUnreachable(f"reverse proxy (Caddy admin API at {self.where}) unreachable: "
                                   f"{type(exc).__name__}: {exc}") from None
        return resp

    @staticmethod
    def _refused(resp: httpx.Response, what: str) -> ProxyRefused:
        try:
            detail = str(resp.json().get("error", ""))
        except ValueError:
            detail = resp.text
        return ProxyRefused(f"the reverse proxy refused {what} (HTTP {resp.status_code}): {detail[:300]}")

    async def alive(self) -> bool:
        try:
            await self.get_apps()
        except ProxyUnreachable:
            return False
        return True

    async def get_apps(self) -> dict[str, Any] | None:
        resp = await self._request("GET", "/config/apps")
        if resp.status_code != 200:
            raise self._refused(resp, "reading its configuration")
        data = resp.json()
        return data if isinstance(data, dict) else None

    async def load_apps(self, apps: dict[str, Any]) -> None:
        """Replace the whole ``apps`` tree at once (the admin listener is left as it is)."""
        resp = await self._request("POST", "/config/apps", apps)
        if resp.status_code != 200:
            raise self._refused(resp, "the configuration")

    async def has_id(self, object_id: str) -> bool:
        resp = await self._request("GET", f"/id/{object_id}")
        if resp.status_code == 200:
            return True
        if resp.status_code in (400, 404) and "unknown object ID" in resp.text:
            return False
        raise self._refused(resp, f"reading {object_id}")

    async def insert_route(self, server: str, route: dict[str, Any]) -> None:
        """Insert ``route`` first in ``server``'s routes (before the catch-all)."""
        resp = await self._request("PUT", f"/config/apps/http/servers/{server}/routes/0", route)
        if resp.status_code != 200:
            raise self._refused(resp, f"route {route.get('@id')}")

    async def replace_id(self, object_id: str, value: dict[str, Any]) -> None:
        resp = await self._request("PATCH", f"/id/{object_id}", value)
        if resp.status_code != 200:
            raise self._refused(resp, f"route {object_id}")

    async def delete_id(self, object_id: str) -> bool:
        """Remove the object ``object_id``; False when it was not there."""
        resp = await self._request("DELETE", f"/id/{object_id}")
        if resp.status_code == 200:
            return True
        if resp.status_code in (400, 404) and "unknown object ID" in resp.text:
            return False
        raise self._refused(resp, f"removing {object_id}")
