"""Thin helpers over LXD's instance API: fetch, change state, edit config safely, delete.

Every helper fetches the instance afresh: a record kept across a restart or a
restore carries stale ``volatile.*`` keys, and writing it back fails with
"Volatile idmap keys can't be deleted by the user". Config edits use the ETag
LXD returns, so two concurrent edits never silently overwrite each other.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from pylxd import Client
from pylxd import exceptions as lxd_exc

from idcs_core import errors
from idcs_lxd.client import run_async
from idcs_lxd.errors import OperationFailed, api_message

# Fields of an instance that PUT accepts.
WRITABLE = ("architecture", "config", "devices", "ephemeral", "profiles", "stateful", "description")

STATE_TIMEOUT = 30  # seconds LXD may take for a graceful stop/restart before it gives up


def get(client: Client, name: str) -> dict[str, Any]:
    """The instance record; ``VMNotFound`` if there is none."""
    return get_with_etag(client, name)[0]


def get_with_etag(client: Client, name: str) -> tuple[dict[str, Any], str | None]:
    try:
        response = client.api.instances[name].get()
    except lxd_exc.NotFound:
        raise errors.VMNotFound(f"instance {name} does not exist on this host") from None
    return response.json()["metadata"], response.headers.get("ETag")


def exists(client: Client, name: str) -> bool:
    try:
        client.api.instances[name].get()
    except lxd_exc.NotFound:
        return False
    return True


def state(client: Client, name: str) -> dict[str, Any]:
    try:
        return client.api.instances[name].state.get().json()["metadata"]
    except lxd_exc.NotFound:
        raise errors.VMNotFound(f"instance {name} does not exist on this host") from None


def status(client: Client, name: str) -> str:
    """LXD's status word (``Running``, ``Stopped``, ``Frozen``...)."""
    return str(get(client, name).get("status", ""))


def set_state(client: Client, name: str, action: str, *, force: bool = False,
              timeout: int = STATE_TIMEOUT) -> None:
    """``PUT /instances/<n>/state`` and wait. ``force`` is always explicit (pylxd defaults it to True)."""
    body = {"action": action, "timeout": timeout, "force": force}
    response = client.api.instances[name].state.put(json=body)
    run_async(client, response, timeout=timeout + 60)


def stop(client: Client, name: str, *, force: bool, timeout: int = STATE_TIMEOUT) -> None:
    """Stop a running or frozen instance; a no-op when it is stopped."""
    current = status(client, name)
    if current == "Stopped":
        return
    if current == "Frozen" and not force:
        set_state(client, name, "unfreeze")
    set_state(client, name, "stop", force=force, timeout=timeout)


# LXD 5.0 refuses an edit while another update operation of the instance is being settled
# ("Failed to create instance update operation: A matching non-reusable operation has now
# succeeded"): a moment later the same edit goes through.
_BUSY = "Failed to create instance update operation"


def modify(client: Client, name: str, change: Callable[[dict[str, Any]], None], *,
           retries: int = 5) -> dict[str, Any]:
    """Edit the instance's writable fields with ``change(body)`` and PUT them back.

    The record is fetched right before the write and sent with ``If-Match``; if
    someone else changed the instance in between (or LXD is still settling another update of
    it), start over. Returns the new record.
    """
    for attempt in range(retries):
        inst, etag = get_with_etag(client, name)
        body = {key: copy.deepcopy(inst[key]) for key in WRITABLE if key in inst}
        before = copy.deepcopy(body)
        change(body)
        if body == before:
            return inst
        headers = {"If-Match": etag} if etag else {}
        try:
            run_async(client, client.api.instances[name].put(json=body, headers=headers), timeout=120)
        except lxd_exc.LXDAPIException as exc:
            changed = exc.response is not None and exc.response.status_code == 412
            if (changed or _BUSY in api_message(exc)) and attempt < retries - 1:
                time.sleep(0.05 * (attempt + 1) if changed else 0.5)
                continue
            raise
        except OperationFailed as exc:
            if _BUSY in str(exc) and attempt < retries - 1:
                time.sleep(0.5)
                continue
            raise
        return get(client, name)
    raise errors.VMOperationFailed(f"instance {name} kept changing while it was being edited")


def patch(client: Client, name: str, body: dict[str, Any]) -> None:
    """``PATCH`` the instance: config keys and whole devices are merged into what is there."""
    run_async(client, client.api.instances[name].patch(json=body), timeout=120)


def create(client: Client, body: dict[str, Any], timeout: float = 600.0) -> None:
    run_async(client, client.api.instances.post(json=body), timeout=timeout)


# A delete racing another state change of the instance (a stop or restart a user or the guest
# started a moment earlier) meets answers that only mean "not settled yet": the instance's lock
# held ("Instance is busy running a "stop" operation"), a force stop of an instance that stopped
# meanwhile ("The instance is already stopped", Incus: "container is not running"), a delete of
# one a restart brought back ("Instance is running"). The delete looks again, this long at the most.
SETTLE_WAIT = 60.0
_SETTLING = ("is busy", "already stopped", "is not running", "instance is running")


def _settling(exc: Exception) -> bool:
    text = lxd_error(exc).lower()
    return any(words in text for words in _SETTLING)


def delete(client: Client, name: str, settle_wait: float = SETTLE_WAIT) -> bool:
    """Stop (force) and delete the instance; False if it was not there. While another state change
    of the instance is settling (``_SETTLING``), look again, for ``settle_wait`` seconds at the most."""
    deadline = time.monotonic() + settle_wait
    while True:
        try:
            stop(client, name, force=True)
            run_async(client, client.api.instances[name].delete(), timeout=300)
        except errors.VMNotFound:
            return False
        except lxd_exc.NotFound:
            return False
        except (lxd_exc.LXDAPIException, OperationFailed) as exc:
            if not _settling(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        return True


def rename(client: Client, name: str, new_name: str) -> None:
    run_async(client, client.api.instances[name].post(json={"name": new_name}), timeout=120)


def list_all(client: Client, recursion: int = 2) -> list[dict[str, Any]]:
    """Every instance in one call (``recursion=2`` includes each one's state)."""
    return client.api.instances.get(params={"recursion": str(recursion)}).json()["metadata"]


def lxd_error(exc: Exception) -> str:
    """Readable text of an LXD API or operation error."""
    if isinstance(exc, lxd_exc.LXDAPIException):
        return api_message(exc)
    if isinstance(exc, OperationFailed):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
