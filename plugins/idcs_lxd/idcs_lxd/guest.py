"""Running commands inside an instance (non-interactive exec), and setting passwords.

``run`` feeds stdin through the exec websocket rather than the command line, so
a secret (a password) never appears in LXD's operation records, events or logs.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from pylxd import Client
from websockets.exceptions import ConnectionClosed

from idcs_core import errors
from idcs_lxd import instances, wsconn
from idcs_lxd.client import wait_operation
from idcs_lxd.errors import OperationFailed
from idcs_lxd.naming import instance_name

_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")
NOT_FOUND = 127


@dataclass
class Result:
    exit_code: int
    stdout: bytes
    stderr: bytes


def _drain(conn: wsconn.ClientConnection, sink: bytearray) -> None:
    try:
        while True:
            message = conn.recv()
            sink += message if isinstance(message, bytes) else message.encode()
    except ConnectionClosed:
        pass
    except Exception:  # a broken socket ends the stream; the exit code still tells
        pass


def run(client: Client, name: str, command: list[str], stdin: bytes = b"", timeout: float = 120.0,
        environment: dict[str, str] | None = None) -> Result:
    """Run ``command`` in the instance, feeding ``stdin``; return exit code and output."""
    response = client.api.instances[name]["exec"].post(json={
        "command": command, "environment": environment or {}, "interactive": False,
        "wait-for-websocket": True, "record-output": False,
    })
    body = response.json()
    operation, fds = body["operation"], body["metadata"]["metadata"]["fds"]
    conns = wsconn.open_fds(client, operation, fds, ("control", "0", "1", "2"))
    out, err = bytearray(), bytearray()
    readers = [threading.Thread(target=_drain, args=(conns["1"], out), daemon=True),
               threading.Thread(target=_drain, args=(conns["2"], err), daemon=True)]
    for reader in readers:
        reader.start()
    try:
        if stdin:
            conns["0"].send(stdin)
        conns["0"].close()  # end of input
        meta = wait_operation(client, operation, timeout=timeout)
        for reader in readers:
            reader.join(timeout=5)
    finally:
        for conn in conns.values():
            conn.close()
    code = (meta.get("metadata") or {}).get("return")
    return Result(int(code) if code is not None else -1, bytes(out), bytes(err))


def set_password(client: Client, vm_uuid: str, username: str, password: str) -> None:
    """``chpasswd`` in the guest, the password on stdin; ``VMOperationFailed`` if it cannot."""
    name = instance_name(vm_uuid)
    if not _USER.match(username or ""):
        raise errors.BadRequest(f"invalid user name {username!r}")
    if not password or "\n" in password or "\r" in password:
        raise errors.BadRequest("the password must be non-empty and on one line")
    if instances.status(client, name) != "Running":
        raise errors.VMOperationFailed(f"{name} is not running: start it to set a password")
    missing = errors.VMOperationFailed(f"{name} has no chpasswd: this image cannot have its password set")
    try:
        result = run(client, name, ["chpasswd"], stdin=f"{username}:{password}\n".encode())
    except OperationFailed as exc:  # LXD: "Command not found"; Incus answers 127
        if "not found" in str(exc).lower():
            raise missing from exc
        raise errors.VMOperationFailed(f"cannot run chpasswd in {name}: {exc}") from exc
    if result.exit_code == NOT_FOUND:
        raise missing
    if result.exit_code != 0:
        message = (result.stderr or result.stdout).decode(errors="replace").replace(password, "***").strip()
        raise errors.VMOperationFailed(
            f"chpasswd failed in {name} (exit {result.exit_code}): {message[:300]}")
