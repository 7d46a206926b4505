"""Host hooks against the real daemons: status, unreachable hosts, https with trust."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from idcs_lxd import testing
from idcs_lxd.client import run_async
from idcs_lxd.engine import LXDEngine
from pylxd import Client

from idcs_core import errors
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


@pytest.fixture
def https_host(engine: LXDEngine, host: HostSpec, backend: testing.Backend,
               tmp_path: Path) -> Iterator[tuple[HostSpec, str]]:
    """The daemon also listening on https on loopback; yields (host without secret, secret)."""
    client = engine.clients.get(host)
    trusted_before = _certificates(client)
    port = testing.free_port()
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
    spec = HostSpec(f"https-{backend.kind}", "LXD", f"https://127.0.0.1:{port}", "", "",
                    {"cert_dir": str(tmp_path / "certs")})
    try:
        yield spec, secret
    finally:
        for fp in _certificates(client) - trusted_before:
            client.api.certificates[fp].delete()
        unset = {"core.https_address": ""}
        if backend.kind == "lxd":
            unset["core.trust_password"] = ""
        client.api.patch(json={"config": unset})


def test_https_with_trust_secret(engine: LXDEngine, https_host: tuple[HostSpec, str],
                                 backend: testing.Backend, tmp_path: Path) -> None:
    base, secret = https_host
    wrong = HostSpec(base.name, base.server_type, base.addr, "", "not-the-secret", dict(base.options))
    with pytest.raises(errors.HostUnreachable, match=r"login|trust"):
        engine.host_connect(host=wrong)
    good = HostSpec(base.name, base.server_type, base.addr, "", secret, dict(base.options))
    status = engine.host_connect(host=good)
    assert status.online and status.extra["server"] == backend.kind and status.extra["trusted"]
    assert (tmp_path / "certs" / "client.crt").exists() and (tmp_path / "certs" / "client.key").exists()
    assert oct((tmp_path / "certs" / "client.key").stat().st_mode & 0o777) == "0o600"
    # trusted now: a fresh connection needs no secret (Incus tokens are single-use anyway)
    again = HostSpec(base.name, base.server_type, base.addr, "", "", dict(base.options))
    assert engine.host_connect(host=again).online
    images = engine.os_images(host=again)
    assert any(i.file == backend.image_alias for i in images)


def test_https_exec_runs_over_wss(engine: LXDEngine, https_host: tuple[HostSpec, str], host: HostSpec,
                                  vm: object, spec: object, sh: object) -> None:
    """Websockets (password, terminal) work over https with the client certificate too."""
    base, secret = https_host
    remote = HostSpec(base.name, base.server_type, base.addr, "", secret, dict(base.options))
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
