"""The core's web terminal (``/console/terminal/ws``) against real containers: many at once,
and closing one ends its shell in the container."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from idcs_oci.testing import DockerBackend
from websockets.sync.client import ClientConnection, connect

from idcs_core.testing.kit import EngineUnderTest, Kit
from idcs_core.testing.kit_support import console_link

# asyncio's default executor (what the web terminal used for its blocking reads and writes).
DEFAULT_WORKERS = min(32, (os.cpu_count() or 1) + 4)


@pytest.fixture(scope="module")
def kit(oci_backend: DockerBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    spec = oci_backend.host_spec()
    eut = EngineUnderTest(server_type="OCInterface", server_addr=spec.addr, server_user="", server_pass="",
                          image=oci_backend.image, unreachable_addr="unix:///tmp/no-such-docker.sock",
                          options=dict(spec.options), vm_spec={"cpu_num": 1, "ram_num": 64, "hdd_num": 1})
    k = Kit(eut, Path(tmp_path_factory.mktemp("idcs-term")))
    try:
        k.start()
        yield k
    finally:
        k.stop()


def _open(kit: Kit, vm: str) -> ClientConnection:
    """A terminal websocket from a fresh link (each link opens one terminal, once)."""
    _page, ws_url, protocols = console_link(kit.api.get(kit.vm_path("remote", vm))["terminal_url"],
                                            kit.api.base_url)
    return connect(ws_url + "?cols=80&rows=24", open_timeout=15, close_timeout=5,
                   subprotocols=protocols)  # type: ignore[arg-type]


def _run(ws: ClientConnection, command: str, pattern: str, timeout: float = 15) -> re.Match[str]:
    """Type ``command`` and read until ``pattern`` shows up in the output; return the match."""
    ws.send(json.dumps({"type": "input", "data": command + "\r"}))
    seen = ""
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, seen.replace("\r", ""))
        if found:
            return found
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {pattern!r} within {timeout}s; the terminal showed {seen[-300:]!r}"
        try:
            frame = ws.recv(timeout=remaining)
        except TimeoutError:
            continue
        seen += frame.decode(errors="replace") if isinstance(frame, bytes) else frame


def _alive(dc: docker.DockerClient, vm: str, pid: int) -> bool:
    code, _ = dc.containers.get(vm).exec_run(["test", "-d", f"/proc/{pid}"])
    return code == 0


def _sleepers(dc: docker.DockerClient, vm: str, seconds: int) -> list[str]:
    _, out = dc.containers.get(vm).exec_run(["ps", "-o", "pid,args"])
    return [ln for ln in out.decode().splitlines() if f"sleep {seconds}" in ln]


def _wait_gone(dc: docker.DockerClient, vm: str, pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while _alive(dc, vm, pid):
        assert time.monotonic() < deadline, f"shell {pid} still runs in {vm} {timeout}s after its terminal closed"
        time.sleep(0.1)


def test_more_terminals_than_executor_workers_each_answer_and_close_ends_the_shell(
        kit: Kit, oci_backend: DockerBackend) -> None:
    vm = kit.create_vm("term")
    count = DEFAULT_WORKERS + 2
    dc = oci_backend.client()
    sockets: list[ClientConnection] = []
    with contextlib.ExitStack() as stack:
        stack.callback(dc.close)
        for _ in range(count):
            sockets.append(stack.enter_context(_open(kit, vm)))
        # All open at once, more than the default executor's workers: each still runs a command.
        # $((...)) makes the answer differ from the echoed input; $$ is the shell's PID.
        pids = []
        for i, ws in enumerate(sockets):
            m = _run(ws, f"echo t{i}-$(({i} + 1000))-$$-end", rf"t{i}-{i + 1000}-(\d+)-end")
            pids.append(int(m.group(1)))
        assert len(set(pids)) == count, pids
        # A child of the first terminal's shell, left running when its browser tab goes away.
        _run(sockets[0], "sleep 4242 & echo bg-$((40 + 2))", r"bg-42")
        assert _sleepers(dc, vm, 4242)

        sockets.pop(0).close()
        _wait_gone(dc, vm, pids[0])
        assert not _sleepers(dc, vm, 4242), "the closed terminal's background job still runs"
        # The other terminals are untouched and still answer.
        for i, ws in enumerate(sockets, start=1):
            assert _alive(dc, vm, pids[i])
            _run(ws, f"echo again{i}-$(({i} * 3))", rf"again{i}-{i * 3}\b")
        for ws in sockets:
            ws.close()
        sockets.clear()
        for pid in pids[1:]:
            _wait_gone(dc, vm, pid)
