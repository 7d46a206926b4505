"""Connections: one cached ``docker.DockerClient`` per host, and the host's options.

``server_addr`` is a Docker URL: ``unix:///var/run/docker.sock`` (a bare path
works too), ``tcp://host:2375``, ``tcp://host:2376`` with ``tls`` set in the
options (or ``https://host:2376``), ``ssh://user@host``. Podman's
Docker-compatible socket works the same way.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import docker.tls

from idcs_core import errors
from idcs_core.enginekit import SessionCache, option_bool, option_number
from idcs_core.types import HostSpec
from idcs_oci.errors import explain, root_cause

# The options this engine understands (shown by ``engine_describe``).
OPTIONS: dict[str, str] = {
    "timeout": "seconds one Docker API call may take (default 30)",
    "long_timeout": "seconds a long Docker call may take: commit, export, pull, remove (default 3600)",
    "stop_timeout": "seconds a graceful stop waits before killing (default 10)",
    "nat_bind": "host address(es) NAT forwarders listen on, comma separated (default 0.0.0.0)",
    "network": "Docker network new containers join (default: the daemon's default bridge)",
    "restart_policy": "restart policy of new containers (default unless-stopped; 'no' to disable)",
    "pull_missing": "pull an image that is not on the host when a VM is created (default false)",
    "max_layers": "flatten a VM's image when recreating it would exceed this many layers (default 100)",
    "tls": "use TLS for tcp:// addresses (default false)",
    "tls_verify": "verify the daemon's certificate against tls_ca_cert (default true)",
    "tls_ca_cert": "path of the CA certificate (PEM) on the control-plane machine",
    "tls_client_cert": "path of the client certificate (PEM)",
    "tls_client_key": "path of the client key (PEM)",
    "ssh_client": "ssh:// through the ssh binary (default: when it is installed) instead of paramiko",
}

_PROBE_API = "1.24"  # the oldest API the SDK speaks; only used to ask the daemon for its own
@dataclass(frozen=True)
class HostOptions:
    """The host's ``options``, parsed and checked."""

    timeout: float = 30.0
    long_timeout: float = 3600.0
    stop_timeout: int = 10
    nat_bind: tuple[str, ...] = ("0.0.0.0",)
    network: str | None = None
    restart_policy: str = "unless-stopped"
    pull_missing: bool = False
    max_layers: int = 100
    tls: bool = False
    tls_verify: bool = True
    tls_ca_cert: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None
    ssh_client: bool = field(default_factory=lambda: shutil.which("ssh") is not None)

    @classmethod
    def parse(cls, options: dict[str, Any]) -> HostOptions:
        o = options or {}
        kw: dict[str, Any] = {}
        if "timeout" in o:
            kw["timeout"] = option_number("timeout", o["timeout"], float, 1)
        if "long_timeout" in o:
            kw["long_timeout"] = option_number("long_timeout", o["long_timeout"], float, 1)
        if "stop_timeout" in o:
            kw["stop_timeout"] = option_number("stop_timeout", o["stop_timeout"], int, 0)
        if "max_layers" in o:
            kw["max_layers"] = option_number("max_layers", o["max_layers"], int, 2)
        if o.get("nat_bind"):
            raw = o["nat_bind"]
            addrs = raw if isinstance(raw, list | tuple) else str(raw).split(",")
            kw["nat_bind"] = tuple(a.strip() for a in addrs if a.strip()) or ("0.0.0.0",)
        for key in ("network", "restart_policy", "tls_ca_cert", "tls_client_cert", "tls_client_key"):
            if o.get(key):
                kw[key] = str(o[key])
        for key in ("pull_missing", "tls", "tls_verify", "ssh_client"):
            if key in o:
                kw[key] = option_bool(key, o[key])
        return cls(**kw)


def base_url(addr: str, opts: HostOptions) -> str:
    """``server_addr`` as the URL the SDK expects."""
    addr = addr.strip()
    if addr.startswith("/"):
        return "unix://" + addr
    scheme = addr.split("://", 1)[0].lower() if "://" in addr else ""
    if scheme not in ("unix", "tcp", "http", "https", "ssh"):
        raise errors.BadRequest(
            f"server_addr {addr!r} is not a Docker URL (unix:///path, tcp://host:port, ssh://user@host)")
    if scheme == "ssh" and importlib.util.find_spec("paramiko") is None:
        # The SDK's ssh transport imports paramiko even when it shells out to the ssh binary.
        raise errors.HostUnreachable(f"ssh:// hosts need paramiko: pip install 'idcs-oci[ssh]' ({addr})")
    if scheme == "tcp" and opts.tls:
        return "https://" + addr.split("://", 1)[1]
    return addr


def _tls_config(opts: HostOptions, url: str) -> docker.tls.TLSConfig | bool:
    if not url.startswith("https://"):
        return False
    cert = None
    if opts.tls_client_cert and opts.tls_client_key:
        cert = (opts.tls_client_cert, opts.tls_client_key)
    verify: bool | str = opts.tls_verify
    if opts.tls_verify and opts.tls_ca_cert:
        verify = opts.tls_ca_cert
    return docker.tls.TLSConfig(client_cert=cert, ca_cert=opts.tls_ca_cert if opts.tls_verify else None,
                                verify=verify)


def _client_kwargs(host: HostSpec, opts: HostOptions, timeout: float) -> dict[str, Any]:
    url = base_url(host.addr, opts)
    return {"base_url": url, "timeout": timeout, "tls": _tls_config(opts, url),
            "use_ssh_client": opts.ssh_client, "max_pool_size": 16}


def _trust_env(url: str, opts: HostOptions) -> bool:
    """requests lets REQUESTS_CA_BUNDLE replace a client's own CA: with a CA of the host's, the
    environment must not be trusted (nor its proxies: the daemon is reached directly)."""
    return not (url.startswith("https://") and opts.tls_verify and opts.tls_ca_cert)


@dataclass
class Conn:
    """What a hook works with: the client, the parsed options, and per-host facts learnt once."""

    host: HostSpec
    client: docker.DockerClient
    opts: HostOptions
    facts: dict[str, Any] = field(default_factory=dict)
    _slow: docker.APIClient | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def api(self) -> docker.APIClient:
        return self.client.api

    @property
    def slow_api(self) -> docker.APIClient:
        """The same daemon with ``long_timeout``: for calls whose answer comes only at their end
        (commit, export/import, pull, removal), which the short read timeout would cut off."""
        with self._lock:
            if self._slow is None:
                api = self.api
                kwargs = _client_kwargs(self.host, self.opts, self.opts.long_timeout)
                self._slow = docker.APIClient(version=api.api_version, **kwargs)
                self._slow.trust_env = api.trust_env
            return self._slow

    @property
    def is_podman(self) -> bool:
        """The daemon is Podman's Docker-compatible service (from its ``/version``, read at connect)."""
        return engine_kind(self.facts.get("version") or {}, {}) == "podman"

    def close(self) -> None:
        self.client.close()
        if self._slow is not None:
            self._slow.close()


class ClientCache(SessionCache[Conn]):
    """One connection per (host, options), from the toolkit's ``SessionCache``: thread-safe, a
    failed connection is not cached, ``drop(host)`` closes the host's connections."""

    def __init__(self) -> None:
        super().__init__(self._connect, Conn.close, key=lambda host: (host, HostOptions.parse(host.options)))

    def connect(self, host: HostSpec) -> Conn:
        """The host's connection, opened (and the daemon's API version negotiated) on first use."""
        return self.get(host)

    @classmethod
    def _connect(cls, host: HostSpec) -> Conn:
        opts = HostOptions.parse(host.options)
        client, version = cls._open_client(host, opts)
        return Conn(host, client, opts, facts={"version": version})

    @staticmethod
    def _open_client(host: HostSpec, opts: HostOptions) -> tuple[docker.DockerClient, dict[str, Any]]:
        """A client at the daemon's own API version, and its ``/version`` answer."""
        kwargs = _client_kwargs(host, opts, opts.timeout)
        trust_env = _trust_env(kwargs["base_url"], opts)
        try:
            # Negotiate the API version (Podman and older daemons are served at their own): one
            # round trip, which also proves the daemon answers.
            probe = docker.APIClient(version=_PROBE_API, **kwargs)
            probe.trust_env = trust_env
            try:
                answer: dict[str, Any] = probe.version(api_version=False)
            finally:
                probe.close()
            client = docker.DockerClient(version=answer["ApiVersion"], **kwargs)
        except Exception as exc:
            cause = root_cause(exc)
            detail = explain(exc) if isinstance(exc, docker.errors.APIError) else f"{type(cause).__name__}: {cause}"
            raise errors.HostUnreachable(f"cannot connect to Docker at {host.addr}: {detail}") from exc
        client.api.trust_env = trust_env
        return client, answer


def is_local_socket(conn: Conn) -> bool:
    """True when the daemon listens on a unix socket of this machine (so /proc is its kernel's)."""
    url = base_url(conn.host.addr, conn.opts)
    return url.startswith("unix://") and os.path.exists(url.removeprefix("unix://"))


def engine_kind(version: dict[str, Any], info: dict[str, Any]) -> str:
    """"podman" or "docker". Podman's ``/info`` looks like Docker's (``ServerVersion`` is just
    "4.3.1"); its ``/version`` names a "Podman Engine" component, and its info has Buildah's version."""
    components = " ".join(str(c.get("Name", "")) for c in version.get("Components") or [])
    text = " ".join([components, str((version.get("Platform") or {}).get("Name", "")),
                     str(info.get("ServerVersion", "")), str(info.get("Name", ""))]).lower()
    return "podman" if "podman" in text or "BuildahVersion" in info else "docker"
