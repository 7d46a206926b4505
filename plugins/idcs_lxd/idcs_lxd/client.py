"""One cached pylxd client per host, address parsing, TLS trust, errors, and waiting for operations.

``server_addr`` may be:

- a unix socket path: ``/var/lib/lxd/unix.socket``, ``/var/lib/incus/unix.socket``;
- ``unix:///var/lib/incus/unix.socket`` (the same, as a URL);
- ``https://host:8443`` (or ``host:8443`` / ``host``, port 8443 assumed): the engine
  presents its own client certificate (created on first use under the host option
  ``cert_dir``, default ``~/.config/idcs/lxd/``) and, when the server does not trust it
  yet, authenticates with ``server_pass`` (an LXD trust password or an Incus/LXD trust
  token).

**Which server certificate is accepted** (https): LXD and Incus servers present
self-signed certificates, so the engine pins one:

- host option ``server_cert`` (a PEM certificate, the path of one, or its SHA-256
  fingerprint): only that certificate, from the very first connection. The secure way.
- otherwise (default) *trust on first use*: the certificate seen on the first
  successful connection is recorded in ``<cert_dir>/servers/<host>_<port>.sha256``;
  later connections presenting another one are refused (``HostUnreachable``,
  "certificate changed") before anything, the trust secret included, is sent.
- ``verify_tls: true``: the certificate must chain to a system CA and name the host
  (for servers given a CA-signed certificate); nothing is pinned.

The check is made on every new TLS connection (requests through ``PinnedAdapter``,
exec websockets in ``wsconn``), not only at log-in.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import logging
import os
import re
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib import parse

import requests
from pylxd import Client
from pylxd import exceptions as lxd_exc
from pylxd.client import _is_a_token
from requests.adapters import HTTPAdapter

from idcs_core import errors
from idcs_core.enginekit import SessionCache, option_bool
from idcs_core.types import HostSpec
from idcs_lxd.errors import OperationFailed, api_message, short

log = logging.getLogger("idcs.lxd")

DEFAULT_PORT = 8443
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0


@dataclass(frozen=True)
class Endpoint:
    """Where a daemon listens: ``kind`` is ``unix`` (``target`` a path) or ``https`` (a URL)."""

    kind: str
    target: str

    @property
    def is_local(self) -> bool:
        return self.kind == "unix"


def parse_addr(addr: str) -> Endpoint:
    """Turn ``server_addr`` into an ``Endpoint``; ``BadRequest`` for a form we do not know."""
    addr = (addr or "").strip()
    if not addr:
        raise errors.BadRequest("server_addr is empty: give a unix socket path or https://host:8443")
    if addr.startswith("unix://"):
        path = parse.unquote(addr.removeprefix("unix://"))
        if not path.startswith("/"):
            raise errors.BadRequest(f"unix socket address must be absolute: {addr!r}")
        return Endpoint("unix", path)
    if addr.startswith("/"):
        return Endpoint("unix", addr)
    if addr.startswith("http://"):
        raise errors.BadRequest("LXD and Incus serve their API over https only: use https://host:8443")
    if "://" in addr and not addr.startswith("https://"):
        raise errors.BadRequest(f"unsupported address scheme in {addr!r}")
    url = addr if addr.startswith("https://") else f"https://{addr}"
    parts = parse.urlsplit(url)
    if not parts.hostname:
        raise errors.BadRequest(f"no host name in {addr!r}")
    port = parts.port or DEFAULT_PORT
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return Endpoint("https", f"https://{host}:{port}")


# ------------------------------------------------------------------ client certificate


def _cert_dir(options: dict[str, Any]) -> Path:
    configured = options.get("cert_dir")
    return Path(configured).expanduser() if configured else Path("~/.config/idcs/lxd").expanduser()


def cert_dir(host: HostSpec) -> Path:
    """The directory holding the engine's client certificate (and pinned server certificates)."""
    return _cert_dir(host.options)


_cert_lock = threading.Lock()


def ensure_client_cert(directory: Path) -> tuple[str, str]:
    """Return (cert, key) paths in ``directory``, creating a self-signed EC pair on first use."""
    cert_path, key_path = directory / "client.crt", directory / "client.key"
    with _cert_lock:
        if cert_path.exists() and key_path.exists():
            return str(cert_path), str(key_path)
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP384R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "OpenIDCS"),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"idcs@{os.uname().nodename}")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=3650))
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), False)
                .sign(key, hashes.SHA384()))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return str(cert_path), str(key_path)


# ------------------------------------------------------------------ server certificate pinning


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, lower-case hex without separators."""
    return hashlib.sha256(der).hexdigest()


def _pem_fingerprint(pem: str) -> str:
    """SHA-256 of the (first) certificate in ``pem``; ``ValueError`` if it is none."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return fingerprint(x509.load_pem_x509_certificate(pem.strip().encode()).public_bytes(Encoding.DER))


def parse_pin(value: Any) -> str:
    """The fingerprint the ``server_cert`` option pins: PEM text, a PEM file, or a SHA-256
    fingerprint (hex, colons allowed); ``BadRequest`` for anything else."""
    text = str(value or "").strip()
    if "-----BEGIN CERTIFICATE-----" in text:
        try:
            return _pem_fingerprint(text[text.index("-----BEGIN CERTIFICATE-----"):])
        except ValueError as exc:
            raise errors.BadRequest(f"server_cert is not a valid PEM certificate: {exc}") from None
    hexed = text.lower().removeprefix("sha256:").replace(":", "").replace(" ", "")
    if re.fullmatch(r"[0-9a-f]{64}", hexed):
        return hexed
    path = Path(text).expanduser()
    if text and path.is_file():
        try:
            return _pem_fingerprint(path.read_text())
        except ValueError as exc:
            raise errors.BadRequest(f"server_cert file {path} is not a PEM certificate: {exc}") from None
    raise errors.BadRequest("server_cert must be a PEM certificate, the path of a PEM file, or the "
                            "certificate's SHA-256 fingerprint (64 hex digits)")


def _host_port(endpoint: Endpoint) -> tuple[str, int]:
    parts = parse.urlsplit(endpoint.target)
    return str(parts.hostname), int(parts.port or DEFAULT_PORT)


def pin_path(directory: Path, endpoint: Endpoint) -> Path:
    """Where the certificate first seen at ``endpoint`` is recorded (trust on first use)."""
    hostname, port = _host_port(endpoint)
    safe = re.sub(r"[^A-Za-z0-9.-]", "_", hostname)
    return directory / "servers" / f"{safe}_{port}.sha256"


def _read_pin(path: Path) -> str | None:
    try:
        text = path.read_text().split()
    except FileNotFoundError:
        return None
    if not text or not re.fullmatch(r"[0-9a-f]{64}", text[0]):
        raise errors.HostUnreachable(f"the pinned certificate record {path} is damaged: delete it to pin "
                                     "the server's certificate again, or set server_cert")
    return text[0]


def _write_pin(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    partial.write_text(value + "\n")
    os.replace(partial, path)


def presented_fingerprint(endpoint: Endpoint, timeout: float) -> str:
    """The fingerprint of the certificate the server at ``endpoint`` presents now (nothing is
    sent but a TLS handshake)."""
    hostname, port = _host_port(endpoint)
    pem = ssl.get_server_certificate((hostname, port), timeout=timeout)
    return _pem_fingerprint(pem)


class PinnedAdapter(HTTPAdapter):
    """Accept exactly one server certificate (by SHA-256), on every new connection.

    urllib3 checks ``assert_fingerprint`` right after the handshake, before a byte of
    the request is written; CA and host name checks are off (LXD certificates are
    self-signed and name no host).
    """

    def __init__(self, expected: str) -> None:
        self.expected = expected
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_fingerprint"] = self.expected
        super().init_poolmanager(*args, **kwargs)


def _session(certs: tuple[str, str] | None, expected: str | None) -> requests.Session:
    """A session presenting ``certs``; pinned to ``expected``, else verified against system CAs."""
    session = requests.Session()
    session.cert = certs
    # the environment must not reroute (proxies) or re-verify (REQUESTS_CA_BUNDLE) this connection
    session.trust_env = False
    if expected is not None:
        session.verify = False
        session.mount("https://", PinnedAdapter(expected))
    else:
        session.verify = True
    session.idcs_fingerprint = expected  # type: ignore[attr-defined]  # read by wsconn
    return session


def _changed(target: str, presented: str, expected: str, where: str) -> errors.HostUnreachable:
    return errors.HostUnreachable(
        f"the TLS certificate of {target} changed: it presents SHA-256 {presented}, but {where} pins "
        f"{expected}. Refusing to connect (nothing was sent). If the server's certificate was replaced "
        "on purpose, set the host option server_cert to the new one")


# ------------------------------------------------------------------ connecting


def _timeout(host_options: dict[str, Any]) -> tuple[float, float]:
    return (float(host_options.get("connect_timeout", CONNECT_TIMEOUT)),
            float(host_options.get("timeout", READ_TIMEOUT)))


def open_client(addr: str, *, password: str = "", options: dict[str, Any] | None = None,
                certs: tuple[str, str] | None = None) -> Client:
    """Connect to the daemon at ``addr`` and return a trusted pylxd ``Client``.

    Raises ``HostUnreachable`` when it cannot be reached, presents a certificate other
    than the pinned one, or refuses our certificate.
    """
    options = options or {}
    endpoint = parse_addr(addr)
    timeout = _timeout(options)
    project = options.get("project") or None
    try:
        if endpoint.kind == "unix":
            if not os.path.exists(endpoint.target):
                raise errors.HostUnreachable(
                    f"LXD socket {endpoint.target} does not exist (is the daemon running?)")
            return Client(endpoint=f"http+unix://{parse.quote(endpoint.target, safe='')}", timeout=timeout,
                          project=project)
        record: Path | None = None
        expected: str | None = None
        where = ""
        if options.get("server_cert"):
            expected = parse_pin(options["server_cert"])
            where = "the host option server_cert"
        elif not option_bool("verify_tls", options.get("verify_tls")):
            record = pin_path(_cert_dir(options), endpoint)
            expected = _read_pin(record)
            where = f"{record} (recorded on the first connection)"
        presented: str | None = None
        if expected is not None or record is not None:
            presented = presented_fingerprint(endpoint, timeout[0])
            if expected is not None and presented != expected:
                raise _changed(endpoint.target, presented, expected, where)
        session = _session(certs, presented)
        client = Client(endpoint=endpoint.target, cert=certs, timeout=timeout, project=project, session=session)
        if not client.trusted:
            if not password:
                raise errors.HostUnreachable(
                    f"{endpoint.target} does not trust this client certificate and no password or "
                    "trust token was given")
            try:
                _trust(client, certs, password)
            except lxd_exc.LXDAPIException as exc:
                raise errors.HostUnreachable(
                    f"login to {endpoint.target} failed: {api_message(exc)}") from exc
            if not client.trusted:
                raise errors.HostUnreachable(f"login to {endpoint.target} failed: certificate not trusted")
        if record is not None and expected is None and presented is not None:
            _write_pin(record, presented)  # trust on first use: the first successful connection
            log.info("pinned the TLS certificate of %s: SHA-256 %s (%s)", endpoint.target, presented, record)
        return client
    except errors.IDCSError:
        raise
    except (lxd_exc.ClientConnectionFailed, requests.RequestException, OSError) as exc:
        where = endpoint.target
        raise errors.HostUnreachable(f"cannot connect to LXD at {where}: {short(exc)}") from exc
    except lxd_exc.LXDAPIException as exc:
        raise errors.HostUnreachable(f"LXD at {endpoint.target} refused the connection: "
                                     f"{api_message(exc)}") from exc


def _trust(client: Client, certs: tuple[str, str] | None, secret: str) -> None:
    """Ask the server to trust our certificate, with a trust password or a trust token.

    pylxd's ``authenticate`` sends Incus tokens as a password (it only knows LXD's
    ``explicit_trust_token``), which Incus refuses: build the request here.
    """
    if not certs:
        raise errors.HostUnreachable("no client certificate to present")
    pem = Path(certs[0]).read_text().strip().splitlines()
    body: dict[str, Any] = {"type": "client", "certificate": "".join(pem[1:-1]),
                            "name": f"openidcs@{os.uname().nodename}"}
    if _is_a_token(secret):
        # Incus and LXD >= 5.21 take the token as trust_token, and only under the client
        # name it was issued for; older LXD takes it as the password. An untrusted client
        # cannot tell which server it talks to, so try one then the other.
        token = json.loads(base64.b64decode(secret.strip()))
        body["name"] = token.get("client_name") or body["name"]
        try:
            client.api.certificates.post(json={**body, "trust_token": secret.strip()})
        except lxd_exc.LXDAPIException:
            client.api.certificates.post(json={**body, "password": secret.strip()})
    else:
        client.api.certificates.post(json={**body, "password": secret})  # a trust password
    client.host_info = client.api.get().json()["metadata"]


class ClientCache(SessionCache[Client]):
    """One pylxd ``Client`` per ``HostSpec`` (address and credentials), shared by threads: the
    toolkit's ``SessionCache`` (a failed connection is not cached; ``drop(host)`` closes it)."""

    def __init__(self) -> None:
        super().__init__(self._connect, lambda client: client.api.session.close())

    @staticmethod
    def _connect(host: HostSpec) -> Client:
        certs = None
        if parse_addr(host.addr).kind == "https":
            certs = ensure_client_cert(cert_dir(host))
        return open_client(host.addr, password=host.password, options=host.options, certs=certs)

    def clear(self) -> None:
        """Close every client (server shut-down)."""
        self.close_all()


# ------------------------------------------------------------------ operations


def operation_id(operation: str) -> str:
    """The id of an operation given as ``/1.0/operations/<id>`` or just ``<id>``."""
    return parse.urlsplit(operation).path.rstrip("/").rsplit("/", 1)[-1]


def wait_operation(client: Client, operation: str, timeout: float = 600.0) -> dict[str, Any]:
    """Wait for a background operation to end; return its final metadata.

    Polls ``/operations/<id>/wait?timeout=`` in slices so the HTTP read timeout never
    cuts a long wait short (Incus answers a slice that ends early with an error, LXD
    with the still-running operation: both just loop). Raises ``OperationFailed``
    with LXD's error text.
    """
    op_id = operation_id(operation)
    deadline = time.monotonic() + timeout
    node = client.api.operations[op_id]
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise OperationFailed(f"operation {op_id} still running after {timeout:g} s")
        slice_s = max(1, min(int(left), 20))
        try:
            meta = node.wait.get(params={"timeout": slice_s},
                                 timeout=(CONNECT_TIMEOUT, slice_s + 30)).json().get("metadata") or {}
        except lxd_exc.NotFound:
            raise OperationFailed(f"operation {op_id} vanished") from None
        except lxd_exc.LXDAPIException:
            meta = node.get().json().get("metadata") or {}
        status = meta.get("status", "")
        if status == "Success":
            return meta
        if status in ("Failure", "Cancelled"):
            raise OperationFailed(meta.get("err") or status)


def run_async(client: Client, response: requests.Response, timeout: float = 600.0) -> dict[str, Any]:
    """Wait for the operation an API call started (202) and return its metadata."""
    body = response.json()
    if body.get("type") != "async":
        return body.get("metadata") or {}
    return wait_operation(client, body["operation"], timeout)
