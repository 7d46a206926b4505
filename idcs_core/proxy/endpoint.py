"""Where a host's reverse proxy (Caddy's admin API) lives: the per-host core setting
``proxy_endpoint``, kept in the host's ``config`` beside ``public_addr`` (never an engine option).

- ``local`` (the default, also when empty): one Caddy that this server starts itself, with a
  private data directory under the data directory, and stops by its PID at shut-down;
- ``off``: no core reverse proxy for this host (``proxys`` answers 1006 unless the engine
  has its own ``proxy_add``);
- ``http://HOST:PORT``: a Caddy the operator runs, whose admin API listens there (loopback
  or a private network only: Caddy's admin API has no authentication). OpenIDCS owns the
  ``apps`` of that Caddy: dedicate one to it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

LOCAL = "local"
OFF = "off"
SETTING = "proxy_endpoint"


@dataclass(frozen=True)
class ProxyEndpoint:
    """A parsed ``proxy_endpoint``: ``kind`` is local, off or http; ``url`` for http."""

    kind: str
    url: str = ""

    @property
    def key(self) -> str:
        """One name per Caddy instance (several hosts may share one)."""
        return self.url if self.kind == "http" else self.kind


def parse(value: object) -> ProxyEndpoint:
    """The endpoint a setting value names; ValueError (with the reason) when it names none."""
    if value is None or value == "":
        return ProxyEndpoint(LOCAL)
    if not isinstance(value, str):
        raise ValueError("must be local, off or http://HOST:PORT")
    text = value.strip()
    if text.lower() in (LOCAL, OFF):
        return ProxyEndpoint(text.lower())
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError("must be local, off or http://HOST:PORT") from None
    if parts.scheme != "http" or not parts.hostname or port is None:
        raise ValueError("must be local, off or http://HOST:PORT (Caddy's admin API)")
    if parts.username or parts.password or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("http://HOST:PORT only: no credentials, path or query")
    host = parts.hostname
    if not _is_host_name(host):
        raise ValueError("HOST must be an IP address or a host name")
    shown = f"[{host}]" if ":" in host else host
    return ProxyEndpoint("http", f"http://{shown}:{port}")


def _is_host_name(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(0 < len(x) <= 63 and x.replace("-", "").isalnum() and x.isascii()
                                    and not x.startswith("-") for x in labels)


def normalise(value: object) -> str:
    """The value to store for a valid setting (``local``, ``off`` or the canonical URL)."""
    return parse(value).key
