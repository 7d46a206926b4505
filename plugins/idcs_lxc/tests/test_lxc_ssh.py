"""The SSH transport against the session's own sshd: host key pinning, bad credentials, one
connection reused by every call and opened again after the host comes back."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from idcs_lxc.engine import LXCEngine
from idcs_lxc.testing import Backend

from idcs_core import errors


def test_wrong_host_key_answers_1003_and_nothing_runs(backend: Backend, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    engine = LXCEngine()
    host = backend.host("ssh", name="lxct-wrongkey", host_key=wrong)
    with pytest.raises(errors.HostUnreachable, match="not the pinned one") as caught:
        engine.host_connect(host=host)
    assert caught.value.code == 1003
    assert engine.sessions.get(host).transport.commands == 0  # refused before any command ran


def test_host_key_pinned_on_first_use_then_enforced(backend: Backend, tmp_path: Path) -> None:
    pins = tmp_path / "pins.json"
    engine = LXCEngine()
    host = backend.host("ssh", name="lxct-pin", known_hosts=str(pins))
    assert engine.host_connect(host=host).online
    assert backend.sshd.host_key_line in pins.read_text()  # pinned on first use
    # a different key pinned for this address is refused
    fake = "AAAAC3NzaC1lZDI1NTE5AAAAI" + "A" * 43
    pins.write_text(pins.read_text().replace(backend.sshd.host_key_line.split()[1], fake))
    with pytest.raises(errors.HostUnreachable, match="not the pinned one"):
        LXCEngine().host_connect(host=host)


def test_bad_password_answers_1003(backend: Backend) -> None:
    engine = LXCEngine()
    host = backend.host("ssh", name="lxct-badpw", password="not-the-password", ssh_key="")
    with pytest.raises(errors.HostUnreachable, match=r"login .* failed") as caught:
        engine.host_connect(host=host)
    assert caught.value.code == 1003


def test_one_connection_reused_and_reopened_after_the_host_returns(backend: Backend) -> None:
    engine = LXCEngine()
    host = backend.host("ssh", name="lxct-reuse")
    engine.host_connect(host=host)
    for _ in range(5):
        engine.host_status(host=host)
        engine.vm_list(host=host)
        engine.os_images(host=host)
    transport = engine.sessions.get(host).transport
    assert transport.connects == 1 and transport.commands >= 15
    backend.sshd.stop()
    try:
        with pytest.raises(errors.HostUnreachable):
            engine.host_status(host=host)
    finally:
        backend.sshd.start()
    assert engine.host_status(host=host).online  # reconnected by itself: the dead session was dropped
    assert engine.sessions.get(host).transport is not transport
    assert engine.sessions.get(host).transport.connects == 1
