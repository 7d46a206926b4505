"""Inside the guest: root password through chpasswd, and the interactive terminal."""

from __future__ import annotations

import logging
import re
import threading
import time

import docker
import pytest
from idcs_oci.engine import OCIEngine
from idcs_oci.terminal import ExecTerminal
from idcs_oci.testing import MakeVM, sh

from idcs_core import errors
from idcs_core.types import HostSpec, PowerAction


def _verify_password(dc: docker.DockerClient, vm: str, password: str) -> bool:
    """Recompute the shadow hash inside the guest with the stored salt."""
    entry = sh(dc, vm, "grep '^root:' /etc/shadow").split(":")[1]
    _, method, salt, _ = entry.split("$")
    assert method == "6"
    code, out = dc.containers.get(vm).exec_run(["mkpasswd", "-m", "sha512", "-S", salt, password])
    return code == 0 and out.decode().strip() == entry


def test_set_password(engine: OCIEngine, host: HostSpec, make_vm: MakeVM, dc: docker.DockerClient,
                      caplog: pytest.LogCaptureFixture) -> None:
    vm = make_vm().vm_uuid
    secret = "S3cret pass:with$specials"
    with caplog.at_level(logging.DEBUG):
        engine.vm_set_password(host=host, vm_uuid=vm, username="root", password=secret)
    assert _verify_password(dc, vm, secret)
    assert not _verify_password(dc, vm, "wrong")
    assert secret not in caplog.text
    # Never on a command line: no exec of this container carries it.
    for exec_id in dc.api.inspect_container(vm)["ExecIDs"] or []:
        assert secret not in str(dc.api.exec_inspect(exec_id))

    with pytest.raises(errors.VMOperationFailed, match="chpasswd failed") as caught:
        engine.vm_set_password(host=host, vm_uuid=vm, username="nobody", password=secret)
    assert secret not in caught.value.msg

    with pytest.raises(errors.BadRequest):
        engine.vm_set_password(host=host, vm_uuid=vm, username="ro:ot", password="x")

    sh(dc, vm, "rm /usr/sbin/chpasswd")
    with pytest.raises(errors.VMOperationFailed, match="no chpasswd"):
        engine.vm_set_password(host=host, vm_uuid=vm, username="root", password=secret)

    engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.HARD_OFF)
    with pytest.raises(errors.VMOperationFailed, match="start it first"):
        engine.vm_set_password(host=host, vm_uuid=vm, username="root", password=secret)


def _read_until(term: ExecTerminal, needle: bytes, timeout: float = 5.0) -> bytes:
    """Read in a thread (read() blocks) until ``needle`` shows up or the time is over."""
    seen = bytearray()
    done = threading.Event()

    def pump() -> None:
        while not done.is_set():
            chunk = term.read()
            if not chunk:
                break
            seen.extend(chunk)
            if needle in seen:
                break
        done.set()

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    done.wait(timeout)
    assert needle in seen, f"{needle!r} not in terminal output {bytes(seen)!r}"
    return bytes(seen)


def test_terminal_round_trip(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                             dc: docker.DockerClient) -> None:
    vm = make_vm().vm_uuid
    term = engine.vm_terminal_open(host=host, vm_uuid=vm, cols=100, rows=30)
    try:
        term.write(b"echo $((6*7))-ok\n")
        _read_until(term, b"42-ok")
        term.write(b"stty size\n")
        _read_until(term, b"30 100")
        term.resize(cols=132, rows=43)
        time.sleep(0.1)
        term.write(b"stty size\n")
        _read_until(term, b"43 132")
        term.write(b"exit\n")
        deadline = time.monotonic() + 5
        while term.read():
            assert time.monotonic() < deadline
    finally:
        term.close()
        term.close()  # twice is fine
    assert term.read() == b""


def test_terminal_needs_a_running_vm(engine: OCIEngine, host: HostSpec, make_vm: MakeVM) -> None:
    vm = make_vm().vm_uuid
    engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.STOP)
    with pytest.raises(errors.VMOperationFailed, match="start it first"):
        engine.vm_terminal_open(host=host, vm_uuid=vm, cols=80, rows=24)
    with pytest.raises(errors.VMNotFound):
        engine.vm_terminal_open(host=host, vm_uuid="t-missing", cols=80, rows=24)


def _shell_pid(term: ExecTerminal) -> int:
    """Start a background job in the terminal and return its shell's PID (in the container)."""
    term.write(b"sleep 4343 & echo pid-$((1 + 1))-$$-end\n")
    seen, deadline = b"", time.monotonic() + 5
    while not (found := re.search(rb"pid-2-(\d+)-end", seen)):
        assert time.monotonic() < deadline, seen
        seen += term.read()
    return int(found.group(1))


def _wait_gone(dc: docker.DockerClient, vm: str, pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while dc.containers.get(vm).exec_run(["test", "-d", f"/proc/{pid}"])[0] == 0:
        assert time.monotonic() < deadline, f"pid {pid} still runs in {vm} after close()"
        time.sleep(0.05)


@pytest.mark.parametrize("no_tools", [False, True], ids=["in-container", "host-pid-fallback"])
def test_terminal_close_ends_its_shell_and_jobs(engine: OCIEngine, host: HostSpec, make_vm: MakeVM,
                                                dc: docker.DockerClient, no_tools: bool) -> None:
    """close() ends the exec's shell and what it started, not just the socket; another terminal of
    the same VM lives on. Without tr in the image they are killed by their PIDs on this machine."""
    vm = make_vm().vm_uuid
    if no_tools:
        sh(dc, vm, "rm -f $(command -v tr)")
    term, other = (engine.vm_terminal_open(host=host, vm_uuid=vm, cols=80, rows=24) for _ in range(2))
    try:
        pid, other_pid = _shell_pid(term), _shell_pid(other)
        assert dc.api.exec_inspect(term.exec_id)["Running"]
        started = time.monotonic()
        term.close()
        assert time.monotonic() - started < 5
        _wait_gone(dc, vm, pid)
        assert not dc.api.exec_inspect(term.exec_id)["Running"]
        assert term.read() == b""
        # The other terminal and its job are untouched.
        assert dc.containers.get(vm).exec_run(["test", "-d", f"/proc/{other_pid}"])[0] == 0
        jobs = [ln for ln in sh(dc, vm, "ps -o pid,args").splitlines() if "sleep 4343" in ln]
        assert len(jobs) == 1, jobs  # the closed terminal's job is gone too (it carries the marker)
        other.write(b"echo still-$((2 * 21))\n")
        _read_until(other, b"still-42")
    finally:
        term.close()
        other.close()
    _wait_gone(dc, vm, other_pid)
