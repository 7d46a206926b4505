"""Crash points for real engines: a server process that stops at a chosen point of an engine call.

``PausingOCI`` and ``PausingLXD`` are the real Docker/Podman and LXD/Incus engines with the hooks
that change things (vm_create, vm_delete, vm_power, vm_set_password, nat_add, backup_create) wrapped: when the file
``<CRASHLAB_DIR>/points.json`` names a call (``"<hook>:<vm_uuid>": "before" | "during" | "after"``),
the call stops there for good, after writing ``reached/<hook>:<vm_uuid>``, so a test can SIGKILL the
server at a known point:

- ``before``: the request was recorded and its task started, the back end not yet called;
- ``during``: inside the engine call, at its first progress report of at least ``DURING[hook]``
  percent (a container made but not started, removed but its disks not, a backup made but not
  returned);
- ``after``: the engine call returned, the core has not recorded its result.

``EventLog`` is an event plugin appending every event it hears to ``<CRASHLAB_DIR>/events.jsonl``
(flushed per line, so a SIGKILL loses nothing written); ``"vm_created:<vm_uuid>": "before"`` stops
it before it records that event (a task ended and committed, its events not yet delivered).
``python tests/crashlab_server.py`` serves the API with these plugins, as ``idcs serve`` does with
the installed ones. Nothing here is imported by the product.
"""

from __future__ import annotations

import inspect
import json
import os
import threading
from pathlib import Path
from typing import Any

from idcs_lxd.engine import LXDEngine
from idcs_oci.engine import OCIEngine

from idcs_core.hookspecs import hookimpl
from idcs_core.types import BackupInfo, HostSpec, NatRule, PowerAction, VMInfo, VMSpec

ENV = "CRASHLAB_DIR"
POINTS = ("before", "during", "after")
# "during" stops at the first progress report at or above this percentage.
DURING = {"vm_create": 60, "vm_delete": 60, "backup_create": 90}


def _dir() -> Path:
    return Path(os.environ[ENV])


def _point(hook: str, vm_uuid: str) -> str | None:
    try:
        points = json.loads((_dir() / "points.json").read_text())
    except FileNotFoundError:
        return None
    return points.get(f"{hook}:{vm_uuid}")


def _stop_here(hook: str, vm_uuid: str) -> None:
    reached = _dir() / "reached"
    reached.mkdir(exist_ok=True)
    (reached / f"{hook}:{vm_uuid}").write_text("")
    threading.Event().wait()  # until the process is killed


class _Stops:
    """Calls ``fn`` with the stop points of ``hook`` for ``vm_uuid`` applied."""

    def __init__(self, hook: str, vm_uuid: str) -> None:
        self.hook, self.vm_uuid = hook, vm_uuid
        self.point = _point(hook, vm_uuid)

    def before(self) -> None:
        if self.point == "before":
            _stop_here(self.hook, self.vm_uuid)

    def after(self) -> None:
        if self.point == "after":
            _stop_here(self.hook, self.vm_uuid)

    def progress(self, progress: Any) -> Any:
        if self.point != "during":
            return progress

        def report(percent: int, message: str = "") -> None:
            progress(percent, message)
            if percent >= DURING[self.hook]:
                _stop_here(self.hook, self.vm_uuid)

        return report


class Pausing:
    """Mixed in before a real engine class: its state-changing hooks honour the stop points."""

    @hookimpl
    def vm_create(self, host: HostSpec, spec: VMSpec, progress: Any) -> VMInfo:
        stops = _Stops("vm_create", spec.vm_uuid)
        stops.before()
        info: VMInfo = super().vm_create(host=host, spec=spec, progress=stops.progress(progress))  # type: ignore[misc]
        stops.after()
        return info

    @hookimpl
    def vm_delete(self, host: HostSpec, vm_uuid: str, progress: Any) -> None:
        stops = _Stops("vm_delete", vm_uuid)
        stops.before()
        super().vm_delete(host=host, vm_uuid=vm_uuid, progress=stops.progress(progress))  # type: ignore[misc]
        stops.after()

    @hookimpl
    def vm_power(self, host: HostSpec, vm_uuid: str, action: PowerAction) -> VMInfo:
        stops = _Stops("vm_power", vm_uuid)
        stops.before()
        base = super().vm_power  # type: ignore[misc]  # a mixin: the engine class after it has the hook
        info: VMInfo = base(host=host, vm_uuid=vm_uuid, action=action)
        stops.after()
        return info

    @hookimpl
    def vm_set_password(self, host: HostSpec, vm_uuid: str, username: str, password: str) -> None:
        stops = _Stops("vm_set_password", vm_uuid)
        stops.before()
        base = super().vm_set_password  # type: ignore[misc]  # a mixin: the engine class after it has the hook
        base(host=host, vm_uuid=vm_uuid, username=username, password=password)
        stops.after()

    @hookimpl
    def nat_add(self, host: HostSpec, vm_uuid: str, rule: NatRule, progress: Any) -> NatRule:
        stops = _Stops("nat_add", vm_uuid)
        stops.before()
        base = super().nat_add  # type: ignore[misc]
        # the task's progress, for an engine that takes it (the OCI engine does, the LXD engine leaves it out)
        extra = {"progress": progress} if "progress" in inspect.signature(base).parameters else {}
        applied: NatRule = base(host=host, vm_uuid=vm_uuid, rule=rule, **extra)
        stops.after()
        return applied

    @hookimpl
    def backup_create(self, host: HostSpec, vm_uuid: str, backup_name: str, description: str,
                      progress: Any) -> BackupInfo:
        stops = _Stops("backup_create", vm_uuid)
        stops.before()
        info: BackupInfo = super().backup_create(  # type: ignore[misc]
            host=host, vm_uuid=vm_uuid, backup_name=backup_name, description=description,
            progress=stops.progress(progress))
        stops.after()
        return info


class PausingOCI(Pausing, OCIEngine):
    pass


class PausingLXD(Pausing, LXDEngine):
    pass


class EventLog:
    """Appends each event heard to ``events.jsonl``: {"event", "task_id" | "vm_uuid", "state", "pid"}
    (``pid``: the server process that delivered it)."""

    def _write(self, record: dict[str, Any]) -> None:
        with open(_dir() / "events.jsonl", "a") as f:
            f.write(json.dumps(record | {"pid": os.getpid()}) + "\n")
            f.flush()

    @hookimpl
    def task_finished(self, task: dict[str, Any]) -> None:
        self._write({"event": "task_finished", "task_id": task["id"], "kind": task["kind"],
                     "vm_uuid": task["vm_uuid"], "state": task["state"]})

    @hookimpl
    def vm_created(self, vm: dict[str, Any]) -> None:
        if _point("vm_created", vm["vm_uuid"]) == "before":  # the outcome is committed, not yet delivered
            _stop_here("vm_created", vm["vm_uuid"])
        self._write({"event": "vm_created", "vm_uuid": vm["vm_uuid"]})

    @hookimpl
    def vm_deleted(self, vm: dict[str, Any]) -> None:
        self._write({"event": "vm_deleted", "vm_uuid": vm["vm_uuid"]})


def events(folder: Path) -> list[dict[str, Any]]:
    path = folder / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
