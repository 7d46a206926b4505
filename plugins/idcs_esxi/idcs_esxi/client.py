"""One vSphere session per host, kept, counted and re-logged-in when it expires.

``Connection`` holds the logged-in ServiceInstance with what every call needs: the
scope the host record names (datacenter, resource pool, datastore, network) and two
container views (VMs, ESXi hosts) that property reads go through. ``Sessions`` (the
toolkit's ``SessionCache``) keeps one per host and options; ``Sessions.run`` retries once
with a fresh login when the server says the session is no longer valid. Passwords and session cookies are
never logged.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from idcs_core import errors
from idcs_core.enginekit import SessionCache
from idcs_core.types import HostSpec
from idcs_esxi.errors import connection_error
from idcs_esxi.options import Options, read_options

log = logging.getLogger("idcs.esxi")
T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint:
    """Where the SDK answers: ``https://host:443/sdk`` unless the address says otherwise."""

    protocol: str
    hostname: str
    port: int
    path: str

    @property
    def display(self) -> str:
        return f"{self.hostname}:{self.port}"


def parse_addr(addr: str) -> Endpoint:
    """Read ``server_addr``: ``host``, ``host:port`` or an ``http(s)://host[:port][/sdk]`` URL."""
    text = addr.strip()
    if "://" not in text:
        text = "https://" + text
    url = urllib.parse.urlsplit(text)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise errors.BadRequest(f"server_addr {addr!r}: expected host, host:port or https://host[:port]")
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError as exc:
        raise errors.BadRequest(f"server_addr {addr!r}: bad port") from exc
    return Endpoint(url.scheme, url.hostname, port, url.path if url.path not in ("", "/") else "/sdk")


@dataclass
class Connection:
    """A logged-in session with the objects the engine's calls start from."""

    host: HostSpec
    endpoint: Endpoint
    options: Options
    si: vim.ServiceInstance
    content: vim.ServiceInstanceContent
    datacenter: vim.Datacenter
    pool: vim.ResourcePool
    vm_view: vim.view.ContainerView
    host_view: vim.view.ContainerView
    ds_view: vim.view.ContainerView
    is_vcenter: bool
    datacenter_name: str = ""
    pool_name: str = ""
    round_trips: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    index: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def pc(self) -> vmodl.query.PropertyCollector:
        return self.content.propertyCollector

    def close(self) -> None:
        """Log out; errors are ignored (the session may be gone already)."""
        try:
            Disconnect(self.si)
        except Exception:
            log.debug("logout from %s failed", self.endpoint.display)


def _count_round_trips(conn: Connection) -> None:
    """Count every SOAP request the session makes (methods and property reads)."""
    stub = conn.si._stub
    invoke_method, invoke_accessor = stub.InvokeMethod, stub.InvokeAccessor

    def counted_method(*args: Any, **kwargs: Any) -> Any:
        conn.round_trips += 1
        return invoke_method(*args, **kwargs)

    def counted_accessor(*args: Any, **kwargs: Any) -> Any:
        conn.round_trips += 1
        return invoke_accessor(*args, **kwargs)

    stub.InvokeMethod, stub.InvokeAccessor = counted_method, counted_accessor


def _pick(found: list[Any], wanted: str, what: str, addr: str) -> Any:
    if not found:
        raise errors.VMOperationFailed(f"{addr} has no {what}")
    if not wanted:
        return found[0]
    for obj in found:
        if obj.name == wanted:
            return obj
    names = ", ".join(sorted(o.name for o in found))
    raise errors.BadRequest(f"{addr}: no {what} named {wanted!r} (there are: {names})")


def _find_pool(content: vim.ServiceInstanceContent, dc: vim.Datacenter, wanted: str, addr: str) -> vim.ResourcePool:
    assert content.viewManager is not None  # every vCenter and ESXi has one
    view = content.viewManager.CreateContainerView(dc.hostFolder, [vim.ComputeResource, vim.ResourcePool], True)
    try:
        objs = list(view.view)
    finally:
        view.DestroyView()
    computes = [o for o in objs if isinstance(o, vim.ComputeResource)]
    found: vim.ResourcePool | None = None
    if not wanted:
        found = _pick(computes, "", "compute resource", addr).resourcePool
    for obj in objs if found is None else []:
        if obj.name == wanted:
            if isinstance(obj, vim.ComputeResource):
                found = obj.resourcePool
            elif isinstance(obj, vim.ResourcePool):
                found = obj
            break
    for obj in computes if found is None else []:  # a standalone host's ComputeResource carries the host's name
        if any(h.name == wanted for h in obj.host):
            found = obj.resourcePool
            break
    if found is not None:
        return found
    raise errors.BadRequest(f"{addr}: no cluster, host or resource pool named {wanted!r}")


def connect(host: HostSpec) -> Connection:
    """Log in to ``host`` and resolve the scope its options name."""
    endpoint = parse_addr(host.addr)
    opts = read_options(host)
    # An explicit context: pyvmomi silently skips verification for localhost when it gets none.
    context = ssl.create_default_context() if opts.verify_tls else None
    try:
        si = SmartConnect(protocol=endpoint.protocol, host=endpoint.hostname, port=endpoint.port,
                          path=endpoint.path, user=host.user, pwd=host.password, sslContext=context,
                          disableSslCertValidation=not opts.verify_tls, httpConnectionTimeout=opts.timeout)
    except Exception as exc:
        raise connection_error(endpoint.display, exc) from exc
    try:
        content = si.RetrieveContent()
        dcs = [e for e in content.rootFolder.childEntity if isinstance(e, vim.Datacenter)]
        dc = _pick(dcs, opts.datacenter, "datacenter", endpoint.display)
        pool = _find_pool(content, dc, opts.resource_pool, endpoint.display)
        vm_view = content.viewManager.CreateContainerView(dc.vmFolder, [vim.VirtualMachine], True)
        host_view = content.viewManager.CreateContainerView(dc.hostFolder, [vim.HostSystem], True)
        ds_view = content.viewManager.CreateContainerView(dc.datastoreFolder, [vim.Datastore], True)
        conn = Connection(host=host, endpoint=endpoint, options=opts, si=si, content=content, datacenter=dc,
                          pool=pool, vm_view=vm_view, host_view=host_view, ds_view=ds_view,
                          is_vcenter=content.about.apiType == "VirtualCenter", datacenter_name=dc.name,
                          pool_name=pool.name)
    except errors.IDCSError:
        Disconnect(si)
        raise
    except Exception as exc:
        Disconnect(si)
        raise connection_error(endpoint.display, exc) from exc
    _count_round_trips(conn)
    log.info("logged in to %s (%s) as %s", endpoint.display, content.about.fullName, host.user)
    return conn


def session_alive(conn: Connection) -> bool:
    """Whether the server still knows the session (one property read)."""
    try:
        manager = conn.content.sessionManager
        return manager is not None and manager.currentSession is not None
    except vim.fault.NotAuthenticated:
        return False


class Sessions(SessionCache[Connection]):
    """One ``Connection`` per host and options (the toolkit's ``SessionCache``), thread-safe;
    ``run`` replaces a session the server no longer knows."""

    def __init__(self) -> None:
        super().__init__(connect, Connection.close, key=lambda host: (host, read_options(host)))
        self._logins: dict[HostSpec, threading.Lock] = {}
        self._logins_guard = threading.Lock()

    def get(self, host: HostSpec) -> Connection:
        """The host's session; one login at a time per host (a burst of hooks on a cold cache
        logs in once, not once per thread: vCenter limits sessions)."""
        with self._logins_guard:
            login = self._logins.setdefault(host, threading.Lock())
        with login:
            return super().get(host)

    def run(self, host: HostSpec, fn: Callable[[Connection], T]) -> T:
        """Call ``fn`` with the host's session; log in again once if the session expired."""
        conn = self.get(host)
        try:
            return fn(conn)
        except vim.fault.NotAuthenticated:
            log.info("session on %s expired: logging in again", conn.endpoint.display)
            self.discard(host, conn)
            return fn(self.get(host))
        except vmodl.fault.ManagedObjectNotFound:
            if session_alive(conn):
                raise
            log.info("session on %s is gone (its views with it): logging in again", conn.endpoint.display)
            self.discard(host, conn)
            return fn(self.get(host))
        except (errors.HostUnreachable, ConnectionError, TimeoutError, OSError, http.client.HTTPException):
            self.discard(host, conn)
            raise
