"""Inside the guest: commands run with ``docker exec``, and the root password.

The password travels on the exec's stdin, never on a command line (where
``ps`` in the container and ``docker exec inspect`` would show it), and it is
never logged or put in an error message.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import docker.utils.socket as docker_socket

from idcs_core import errors
from idcs_oci import containers
from idcs_oci.client import Conn


def raw_socket(sock: Any) -> Any:
    """The socket under what ``exec_start(socket=True)`` returns (a SocketIO for unix/tcp)."""
    return getattr(sock, "_sock", sock)


def shutdown_write(sock: Any) -> None:
    """Half-close: the process in the container reads end-of-file on its stdin."""
    raw = raw_socket(sock)
    if hasattr(raw, "shutdown_write"):  # paramiko channel (ssh://)
        raw.shutdown_write()
    else:
        raw.shutdown(socket.SHUT_WR)


def require_running(conn: Conn, vm_uuid: str) -> dict[str, Any]:
    attrs = containers.inspect(conn, vm_uuid)
    state = (attrs.get("State") or {}).get("Status", "")
    if state != "running":
        raise errors.VMOperationFailed(f"{vm_uuid} is {state or 'not running'}: start it first")
    return attrs


def run_with_input(conn: Conn, cid: str, cmd: list[str], data: bytes) -> tuple[int, bytes, bytes]:
    """Run ``cmd`` in the container with ``data`` on its stdin; (exit code, stdout, stderr)."""
    exec_id = conn.api.exec_create(cid, cmd, stdin=True, stdout=True, stderr=True, tty=False)["Id"]
    sock = conn.api.exec_start(exec_id, socket=True)
    try:
        raw_socket(sock).sendall(data)
        shutdown_write(sock)
        chunks: dict[int, list[bytes]] = {docker_socket.STDOUT: [], docker_socket.STDERR: []}
        for stream, data in docker_socket.frames_iter(sock, tty=False):
            chunks.setdefault(stream, []).append(data)
    finally:
        sock.close()
    deadline = time.monotonic() + 10
    while True:
        result = conn.api.exec_inspect(exec_id)
        if not result.get("Running") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    code = result.get("ExitCode")
    out, err = b"".join(chunks[docker_socket.STDOUT]), b"".join(chunks[docker_socket.STDERR])
    return (code if code is not None else -1), out, err


def set_password(conn: Conn, vm_uuid: str, username: str, password: str) -> None:
    if not username or any(c in username for c in ":\n\r") or any(c in password for c in "\n\r"):
        raise errors.BadRequest("the user name must not be empty or hold ':' or a line break, "
                                "and the password must not hold a line break")
    attrs = require_running(conn, vm_uuid)
    code, out, err = run_with_input(conn, attrs["Id"], ["chpasswd"], f"{username}:{password}\n".encode())
    if code == 0:
        return
    text = (err or out).decode(errors="replace").strip()
    if password:
        text = text.replace(password, "***")
    if code in (126, 127) or "executable file not found" in text:
        raise errors.VMOperationFailed(
            f"cannot set the password of {username} in {vm_uuid}: the image has no chpasswd")
    raise errors.VMOperationFailed(f"chpasswd failed in {vm_uuid} (exit {code}): {text[:300]}")
