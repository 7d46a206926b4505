"""One vmrest connection pool per host (and event loop), basic auth, vmrest's media type.

The pool is an ``httpx.AsyncClient`` kept in the toolkit's ``SessionCache``; it is tied to the
event loop that made it, so the cache keys on the loop too. ``close(host)`` takes a host's pools
out of the cache and awaits their close (``host_close``). The password
only ever travels in the ``Authorization`` header: never in a URL, a log line or an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Hashable
from typing import Any

import httpx

from idcs_core.enginekit import SessionCache
from idcs_core.types import HostSpec
from idcs_vmware.errors import VmrestError, from_response, from_transport
from idcs_vmware.host import Settings, base_url, settings
from idcs_vmware.naming import VmIndex

MEDIA = "application/vnd.vmware.vmw.rest-v1+json"


class Vmrest:
    """A vmrest endpoint: ``await api.get("/api/vms")`` returns the parsed JSON answer."""

    def __init__(self, host: HostSpec, http: httpx.AsyncClient, index: VmIndex) -> None:
        self.host = host
        self.http = http
        self.index = index
        self.settings: Settings = settings(host)

    async def call(self, method: str, path: str, body: Any = None, *, raw: str | None = None) -> Any:
        """One request. ``raw`` sends a bare string body (the power verb); answers 2xx -> JSON or None.

        Raises ``VmrestError`` for an HTTP error answer, ``HostUnreachable`` for transport failures."""
        kwargs: dict[str, Any] = {}
        if raw is not None:
            kwargs["content"] = raw.encode()
        elif body is not None:
            kwargs["json"] = body
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise from_transport(exc, self.host.addr) from None
        if response.status_code >= 400:
            raise from_response(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise VmrestError(response.status_code, None, "vmrest answered something that is not JSON") from None

    async def get(self, path: str) -> Any:
        return await self.call("GET", path)

    async def put(self, path: str, body: Any = None, *, raw: str | None = None) -> Any:
        return await self.call("PUT", path, body, raw=raw)

    async def post(self, path: str, body: Any) -> Any:
        return await self.call("POST", path, body)

    async def delete(self, path: str) -> Any:
        return await self.call("DELETE", path)

    async def list_vms(self) -> list[dict[str, Any]]:
        """``GET /api/vms`` (every VM, templates included); refreshes the name -> id index."""
        listing = await self.get("/api/vms")
        if not isinstance(listing, list):
            raise VmrestError(200, None, "GET /api/vms did not answer a list")
        self.index.update(listing)
        return listing


def _pool_key(host: HostSpec) -> Hashable:
    # HostSpec's hash leaves options out: a changed verify_tls is a new pool; a pool serves one loop
    return host, settings(host), id(asyncio.get_running_loop())


def _open_pool(host: HostSpec) -> httpx.AsyncClient:
    conf = settings(host)
    return httpx.AsyncClient(
        base_url=base_url(host.addr), auth=httpx.BasicAuth(host.user, host.password),
        headers={"Accept": MEDIA, "Content-Type": MEDIA}, verify=conf.verify_tls,
        timeout=httpx.Timeout(conf.timeout, connect=min(conf.timeout, 5.0)),
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
    )


# Pools are closed by ``close`` (awaited), never by the cache: it has no event loop to close them on.
POOLS: SessionCache[httpx.AsyncClient] = SessionCache(_open_pool, key=_pool_key)
_lock = threading.Lock()
_indexes: dict[HostSpec, VmIndex] = {}
_locks: dict[tuple[str, int], asyncio.Lock] = {}


def host_lock(host: HostSpec) -> asyncio.Lock:
    """One lock per vmrest endpoint (and loop) for read-then-write steps that must not interleave:
    picking a free VNC port, checking then setting a port forward (vmrest's PUT replaces)."""
    key = (host.addr.rstrip("/"), id(asyncio.get_running_loop()))
    with _lock:
        return _locks.setdefault(key, asyncio.Lock())


def connect(host: HostSpec) -> Vmrest:
    """The cached pool for ``host`` on the running event loop (made on first use)."""
    http = POOLS.get(host)
    if http.is_closed:
        POOLS.discard(host, http)
        http = POOLS.get(host)
    with _lock:
        index = _indexes.setdefault(host, VmIndex())
    return Vmrest(host, http, index)


async def close(host: HostSpec) -> None:
    """Close every pool of ``host`` (any loop) and forget its index. Never raises."""
    with _lock:
        _indexes.pop(host, None)
    for http in POOLS.take(host):
        with contextlib.suppress(Exception):
            await http.aclose()
