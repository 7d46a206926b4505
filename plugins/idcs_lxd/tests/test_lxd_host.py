"""Host hooks against the real daemons: status, unreachable hosts, https with trust and pinning."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from idcs_lxd import instances, testing, wsconn
from idcs_lxd.client import run_async
from idcs_lxd.engine import LXDEngine
from idcs_lxd.errors import translated
from pylxd import Client

from idcs_core import errors
from idcs_core.testing.backends import free_port
from idcs_core.types import HostSpec


def test_host_status(engine: LXDEngine, host: HostSpec, backend: testing.Backend) -> None:
    status = engine.host_connect(host=host)
    assert status.online
    assert status.extra["server"] == backend.kind
    assert status.version and status.version[0].isdigit()
    assert status.extra["trusted"] is True
    for value in (status.cpu_usage, status.memory_usage, status.disk_usage):
        assert value is not None and 0.0 <= value <= 100.0
    assert isinstance(status.vms_count, int)
    started = time.perf_counter()
    engine.host_status(host=host)
    assert time.perf_counter() - started < 2.0


def test_host_status_counts_instances(engine: LXDEngine, host: HostSpec, vm: object) -> None:
    names = {v.vm_uuid for v in engine.vm_list(host=host)}
    assert engine.host_status(host=host).vms_count == len(names)


def _expect_unreachable(engine: LXDEngine, host: HostSpec) -> str:
    started = time.perf_counter()
    with pytest.raises(errors.HostUnreachable) as caught:
        engine.host_status(host=host)
    assert time.perf_counter() - started < 3.0, "an unreachable host must fail fast"
    return caught.value.msg


def test_missing_socket_is_unreachable(engine: LXDEngine, tmp_path: Path) -> None:
    host = HostSpec("down", "LXD", str(tmp_path / "unix.socket"), "", "")
    assert "does not exist" in _expect_unreachable(engine, host)
    with pytest.raises(errors.HostUnreachable):
        engine.vm_list(host=host)


def test_dead_socket_is_unreachable(engine: LXDEngine, tmp_path: Path) -> None:
    path = tmp_path / "dead.socket"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))  # a socket file nobody listens on: connection refused
    host = HostSpec("dead", "LXD", f"unix://{path}", "", "")
    assert "refused" in _expect_unreachable(engine, host)


def test_closed_https_port_is_unreachable(engine: LXDEngine, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    host = HostSpec("tcp-down", "LXD", f"https://127.0.0.1:{port}", "", "pw", {"cert_dir": str(tmp_path)})
    _expect_unreachable(engine, host)


def test_daemon_gone_mid_session_drops_client(engine: LXDEngine, tmp_path: Path) -> None:
    """A cached client whose daemon disappears gives HostUnreachable, not a stack trace."""
    path = tmp_path / "fake.socket"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    host = HostSpec("flaky", "LXD", str(path), "", "")
    listener.close()
    os.unlink(path)
    _expect_unreachable(engine, host)


def test_host_close_drops_cached_client(engine: LXDEngine, host: HostSpec) -> None:
    first = engine.clients.get(host)
    engine.host_close(host=host)
    assert engine.clients.get(host) is not first
    engine.host_close(host=HostSpec("never-seen", "LXD", "/nowhere", "", ""))  # must not raise


# ------------------------------------------------------------------ https with a trust password / token


def _certificates(client: Client) -> set[str]:
    return {c.rsplit("/", 1)[-1] for c in client.api.certificates.get().json()["metadata"]}


@dataclass
class Https:
    """The daemon on https, reached through a forwarder that can turn into a man in the middle."""

    spec: HostSpec  # no secret in it
    secret: str
    forwarder: testing.TLSForwarder
    server_pem: str  # the daemon's own certificate
    pin_file: Path  # where trust on first use records it

    def with_options(self, secret: str = "", **options: Any) -> HostSpec:
        return HostSpec(self.spec.name, self.spec.server_type, self.spec.addr, "", secret,
                        {**self.spec.options, **options})


@pytest.fixture
def https(engine: LXDEngine, host: HostSpec, backend: testing.Backend, tmp_path: Path) -> Iterator[Https]:
    """The daemon also listening on https on loopback, behind a ``TLSForwarder``."""
    client = engine.clients.get(host)
    trusted_before = _certificates(client)
    port = free_port()
    config = {"core.https_address": f"127.0.0.1:{port}"}
    if backend.kind == "lxd":
        secret = "idcs-trust-pw"
        config["core.trust_password"] = secret
    client.api.patch(json={"config": config})
    if backend.kind == "incus":
        env = {**os.environ, "INCUS_DIR": str(backend.state_dir)}
        out = subprocess.run(["incus", "config", "trust", "add", f"idcs-test-{port}", "--quiet"],
                             env=env, capture_output=True, text=True, check=True, timeout=30)
        secret = out.stdout.strip().splitlines()[-1]
    forwarder = testing.TLSForwarder(("127.0.0.1", port), tmp_path)
    spec = HostSpec(f"https-{backend.kind}", "LXD", forwarder.addr, "", "", {"cert_dir": str(tmp_path / "certs")})
    pin_file = tmp_path / "certs" / "servers" / f"127.0.0.1_{forwarder.port}.sha256"
    try:
        yield Https(spec, secret, forwarder, (backend.state_dir / "server.crt").read_text(), pin_file)
    finally:
        forwarder.close()
        for fp in _certificates(client) - trusted_before:
            client.api.certificates[fp].delete()
        unset = {"core.https_address": ""}
        if backend.kind == "lxd":
            unset["core.trust_password"] = ""
        client.api.patch(json={"config": unset})


def _sha256(pem: str) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def test_https_with_trust_secret_pins_on_first_use(engine: LXDEngine, https: Https, backend: testing.Backend,
                                                   tmp_path: Path) -> None:
    # "false" is false (bool("false") would have turned on CA checks, which a self-signed server fails)
    wrong = https.with_options("not-the-secret", verify_tls="false")
    with pytest.raises(errors.HostUnreachable, match=r"login|trust"):
        engine.host_connect(host=wrong)
    assert not https.pin_file.exists(), "only a successful connection may pin the certificate"
    good = https.with_options(https.secret, verify_tls="false")
    status = engine.host_connect(host=good)
    assert status.online and status.extra["server"] == backend.kind and status.extra["trusted"]
    assert (tmp_path / "certs" / "client.crt").exists() and (tmp_path / "certs" / "client.key").exists()
    assert oct((tmp_path / "certs" / "client.key").stat().st_mode & 0o777) == "0o600"
    assert https.pin_file.read_text().split() == [_sha256(https.server_pem)]
    # trusted now: a fresh connection needs no secret (Incus tokens are single-use anyway)
    again = https.with_options()
    assert engine.host_connect(host=again).online
    images = engine.os_images(host=again)
    assert any(i.file == backend.image_alias for i in images)

    # a man in the middle with another certificate, at the same address: refused, and sent nothing
    https.forwarder.mode = "impostor"
    for attempt in (again, good):
        with pytest.raises(errors.HostUnreachable, match=r"certificate of .* changed") as caught:
            engine.host_connect(host=attempt)
        assert _sha256(https.forwarder.cert.read_text()) in caught.value.msg
    assert https.forwarder.impersonated >= 2 and bytes(https.forwarder.received) == b""
    assert https.pin_file.read_text().split() == [_sha256(https.server_pem)]  # the pin did not move
    https.forwarder.mode = "relay"
    assert engine.host_connect(host=again).online


def test_https_server_cert_pins_from_the_start(engine: LXDEngine, https: Https, tmp_path: Path) -> None:
    """server_cert (PEM, PEM file or fingerprint) accepts that certificate only, from the first connection."""
    pem_file = tmp_path / "server.pem"
    pem_file.write_text(https.server_pem)
    fingerprint = _sha256(https.server_pem)
    forms = [https.server_pem, str(pem_file), ":".join(fingerprint[i:i + 2] for i in range(0, 64, 2)).upper()]
    https.forwarder.mode = "impostor"
    for form in forms:
        with pytest.raises(errors.HostUnreachable, match="changed") as caught:
            engine.host_connect(host=https.with_options(https.secret, server_cert=form))
        assert "server_cert" in caught.value.msg
    assert bytes(https.forwarder.received) == b"", "the secret went to the impostor"
    https.forwarder.mode = "relay"
    assert engine.host_connect(host=https.with_options(https.secret, server_cert=forms[0])).online
    for form in forms[1:]:
        assert engine.host_connect(host=https.with_options(server_cert=form)).online
    assert not https.pin_file.exists()  # an explicit pin records nothing
    # a pin of another certificate refuses the real server
    other = https.with_options(server_cert=https.forwarder.cert.read_text())
    with pytest.raises(errors.HostUnreachable, match="changed"):
        engine.host_connect(host=other)
    with pytest.raises(errors.BadRequest):
        engine.host_connect(host=https.with_options(server_cert="not a certificate"))


def test_https_verify_tls_checks_the_ca(engine: LXDEngine, https: Https) -> None:
    """verify_tls: true (or "yes", "1") wants a CA-signed certificate: a self-signed server is refused."""
    for word in (True, "yes", "1"):
        with pytest.raises(errors.HostUnreachable, match=r"not trusted|CERTIFICATE_VERIFY_FAILED"):
            engine.host_connect(host=https.with_options(https.secret, verify_tls=word))
    assert not https.pin_file.exists()
    with pytest.raises(errors.BadRequest):
        engine.host_connect(host=https.with_options(https.secret, verify_tls="maybe"))


def test_https_exec_runs_over_wss(engine: LXDEngine, https: Https, host: HostSpec, vm: object, spec: object,
                                  sh: object) -> None:
    """Websockets (password, terminal) work over https with the client certificate, pinned too."""
    remote = https.with_options(https.secret)
    engine.host_connect(host=remote)
    engine.vm_set_password(host=remote, vm_uuid=spec.vm_uuid, username="root", password="over-wss-1")
    shadow = sh(spec.vm_uuid, "grep '^root:' /etc/shadow")
    assert shadow.split(":")[1].startswith("$6$")
    term = engine.vm_terminal_open(host=remote, vm_uuid=spec.vm_uuid, cols=80, rows=24)
    try:
        term.write(b"echo wss-$((40+2))\n")
        deadline, out = time.monotonic() + 10, b""
        while b"wss-42" not in out and time.monotonic() < deadline:
            out += term.read()
        assert b"wss-42" in out
    finally:
        term.close()
    # an impostor at the address: the websocket is refused before its request (and secret) is sent
    https.forwarder.mode = "impostor"
    with pytest.raises(errors.HostUnreachable, match=r"certificate .* changed"):
        wsconn.open_fd(engine.clients.get(remote), "/1.0/operations/0000", "ws-secret-that-must-not-leak")
    assert https.forwarder.impersonated >= 1 and bytes(https.forwarder.received) == b""


def test_revoked_trust_is_unreachable(engine: LXDEngine, https: Https, host: HostSpec) -> None:
    """A server that stops trusting the engine's certificate answers 403: the host is unreachable (1003)."""
    remote = https.with_options(https.secret)
    engine.host_connect(host=remote)
    assert isinstance(engine.vm_list(host=remote), list)
    local = engine.clients.get(host)
    mine = _sha256(Path(https.spec.options["cert_dir"], "client.crt").read_text())
    local.api.certificates[mine].delete()
    with pytest.raises(errors.HostUnreachable, match=r"403|trusted"):
        engine.vm_list(host=remote)


def test_bad_request_from_the_daemon_is_400(engine: LXDEngine, host: HostSpec, vm: object, spec: object) -> None:
    """LXD's 400 (a request it refuses as malformed) is BadRequest, not an operation failure (1005)."""
    client = engine.clients.get(host)
    with pytest.raises(errors.BadRequest, match="Unknown action"):
        with translated(engine.clients, host, "a state change LXD does not know"):
            instances.set_state(client, spec.vm_uuid, "jump")
    assert engine.vm_status(host=host, vm_uuid=spec.vm_uuid).status == "running"


def test_backend_failure_is_loud(tmp_path: Path) -> None:
    """The fixture module raises, with the daemon's output, when a daemon cannot start."""
    crash = ["/bin/sh", "-c", "echo 'error: cannot listen on socket' >&2; exit 3"]
    with pytest.raises(testing.BackendError) as caught:
        testing.start_daemon("lxd", tmp_path, state_dir=tmp_path / "state", timeout=20, command=crash)
    assert "exited with code 3" in str(caught.value)
    assert "cannot listen on socket" in str(caught.value)


def test_run_async_of_sync_response(engine: LXDEngine, host: HostSpec) -> None:
    response = engine.clients.get(host).api.get()
    assert run_async(engine.clients.get(host), response)["api_version"] == "1.0"
