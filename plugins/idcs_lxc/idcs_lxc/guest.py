"""Inside the container: the password through ``lxc-attach ... chpasswd`` (password on stdin)."""

from __future__ import annotations

import re

from idcs_core import errors
from idcs_lxc.client import Session

USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


def set_password(session: Session, name: str, username: str, password: str) -> None:
    """Set ``username``'s password with the guest's own ``chpasswd``; a clear error if it has none."""
    if not USER.match(username or ""):
        raise errors.BadRequest(f"not a valid user name: {username!r}")
    if not password or "\n" in password or ":" in username:
        raise errors.BadRequest("the password must be one non-empty line")
    state = session.run(session.lxc("lxc-info", "-n", name, "-sH"))
    if state.code != 0:
        raise errors.VMNotFound(f"container {name} is not on the host")
    if state.out.strip() != "RUNNING":
        raise errors.VMOperationFailed(f"{name} is not running: start it to set a password")
    probe = session.run(session.lxc("lxc-attach", "-n", name, "--clear-env", "--", "/bin/sh", "-c",
                                    "command -v chpasswd"))
    if probe.code != 0:
        raise errors.VMOperationFailed(f"the image of {name} has no chpasswd: its password cannot be set")
    result = session.run(session.lxc("lxc-attach", "-n", name, "--clear-env", "--", "chpasswd"),
                         stdin=f"{username}:{password}\n".encode())
    if result.code != 0:
        # the message may echo the input line: never pass it on
        raise errors.VMOperationFailed(f"chpasswd in {name} failed (exit code {result.code})")
