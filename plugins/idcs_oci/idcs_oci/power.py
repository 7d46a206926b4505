"""Power actions on a container: start, kill, stop, restart, pause, unpause.

Each action first looks at the container's state, so repeating an action
("start" a running VM, "power off" a stopped one) succeeds without a call.
"""

from __future__ import annotations

import docker.errors

from idcs_core import errors
from idcs_core.types import PowerAction, VMInfo
from idcs_oci import containers, lifecycle
from idcs_oci.client import Conn
from idcs_oci.errmap import explain

# Docker's answers when the container reached the wanted state on its own meanwhile.
_ALREADY = ("is not running", "is not paused", "is already paused", "already in progress")


def apply(conn: Conn, vm_uuid: str, action: PowerAction) -> VMInfo:
    attrs = containers.inspect(conn, vm_uuid)
    cid = attrs["Id"]
    state = (attrs.get("State") or {}).get("Status", "")
    running = state in containers.RUNNING_STATES
    api = conn.api
    try:
        if action == PowerAction.START:
            if state == "paused":
                api.unpause(cid)
            elif not running:
                api.start(cid)
        elif action == PowerAction.HARD_OFF:
            if running:
                api.kill(cid)
        elif action == PowerAction.STOP:
            if running:
                api.stop(cid, timeout=conn.opts.stop_timeout)
        elif action == PowerAction.RESET:
            api.restart(cid, timeout=conn.opts.stop_timeout)
        elif action == PowerAction.PAUSE:
            if state in ("running", "restarting"):
                api.pause(cid)
            elif state != "paused":
                raise errors.VMOperationFailed(f"{vm_uuid} is {state}: only a running VM can be paused")
        elif action == PowerAction.RESUME:
            if state == "paused":
                api.unpause(cid)
            elif not running:
                raise errors.VMOperationFailed(f"{vm_uuid} is {state}, not paused: start it instead")
        else:
            raise errors.NotSupported(f"power action {action!r} is not supported by the OCInterface engine")
    except docker.errors.APIError as exc:
        if not any(p in explain(exc) for p in _ALREADY):
            raise
    return lifecycle.status(conn, vm_uuid, sample=False)
