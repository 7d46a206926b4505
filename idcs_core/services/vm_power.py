"""Power actions on a VM: a task of kind ``vm_power`` (audited as ``vm.power`` when it ends).

The request checks the action word and that the VM is idle, records the task, and waits for it
(the contract's answer: the VM's status after the action). The handler reports progress, calls
the engine, stores the state the engine answers and has ``vm_powered`` heard with the task's end.

A hook that answers after its timeout: the task fails (1003), and once the hook has ended the VM's
state is read from the host and recorded (``late_hooks``). A task left running by a dead process:
the recovery rule reads the VM's state from the host and records it; the task succeeds when the VM
is in the state the action asked for, else it fails saying what the host has.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from idcs_core import errors
from idcs_core.db.models import VM, Task
from idcs_core.ops import traffic
from idcs_core.services.late_hooks import settle_late
from idcs_core.services.lookup import get_vm, task_vm
from idcs_core.services.vms import KEEP_CODES, apply_live, ensure_idle
from idcs_core.tasks import answer_of, defer_event, task_handler, task_recovery
from idcs_core.types import PowerAction, VMInfo, VMStatus

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal
    from idcs_core.tasks import TaskProgress

# Every word a client may send for a power action: the contract's four, then the
# billing dialect's (S_RESUME and plain words).
POWER_WORDS: dict[str, PowerAction] = {
    "S_START": PowerAction.START, "H_CLOSE": PowerAction.HARD_OFF, "S_RESET": PowerAction.RESET,
    "S_PAUSE": PowerAction.PAUSE, "S_RESUME": PowerAction.RESUME, "S_CLOSE": PowerAction.STOP,
    "H_RESET": PowerAction.RESET,
    "start": PowerAction.START, "stop": PowerAction.STOP, "hard_stop": PowerAction.HARD_OFF,
    "reset": PowerAction.RESET, "hard_reset": PowerAction.RESET, "restart": PowerAction.RESET,
    "pause": PowerAction.PAUSE, "suspend": PowerAction.PAUSE, "resume": PowerAction.RESUME,
    "unpause": PowerAction.RESUME,
}
# The status each action leaves the VM in (how a recovery tells whether the action was done).
END_STATUS: dict[PowerAction, str] = {
    PowerAction.START: VMStatus.RUNNING, PowerAction.RESET: VMStatus.RUNNING, PowerAction.RESUME: VMStatus.RUNNING,
    PowerAction.STOP: VMStatus.STOPPED, PowerAction.HARD_OFF: VMStatus.STOPPED, PowerAction.PAUSE: VMStatus.PAUSED,
}


def power_action(word: str) -> PowerAction:
    try:
        return POWER_WORDS[word]
    except KeyError:
        raise errors.BadRequest(
            f"unknown power action {word!r:.40}: use S_START, H_CLOSE, S_RESET or S_PAUSE") from None


async def power(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str, word: str) -> dict[str, Any]:
    """Run ``word`` on the VM as a ``vm_power`` task and answer the VM's status afterwards."""
    action = power_action(word)
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        core.require(vm.host, "vm_power", "vm power")
        ensure_idle(core, vm)
        task = core.tasks.add(s, "vm_power", host_name=hs_name, vm_uuid=vm_uuid, user_id=principal.user_id,
                              params={"vm_id": vm.id, "action": action.value, "word": word})
    result = await core.tasks.run(task.id)
    return answer_of(result)


@task_handler("vm_power")
async def _run_power(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    action = PowerAction(task.params["action"])
    async with core.db.session() as s:
        vm = await task_vm(s, task, f"before {action.value}")
    progress(10, f"{action.value} {vm.vm_uuid}")
    try:
        info: VMInfo = await core.engines.vm_power(vm, action)
    except errors.IDCSError as exc:
        settle_late(core, exc, f"{action.value} of {vm.host.server_name}/{vm.vm_uuid}",
                    lambda _result: _record_host_state(core, vm))
        if isinstance(exc, KEEP_CODES):
            raise
        raise errors.VMOperationFailed(f"{action.value} on {vm.vm_uuid} failed: {exc.msg}") from exc
    progress(80, f"{vm.vm_uuid} is {info.status}")
    await apply_live(core, vm.id, info)
    if action in (PowerAction.START, PowerAction.RESET) and any(traffic.caps_of(vm.config)):
        await traffic.apply_caps(core, vm.id)  # a (re)started container may have a new host-side interface
    await _tell_powered(core, task, vm, action, info.status)
    return {"vm_uuid": vm.vm_uuid, "action": action.value, "status": info.status, "power_state": info.power_state,
            "message": f"{action.value}: {vm.vm_uuid} is {info.status}"}


async def _tell_powered(core: CoreContext, task: Task, vm: VM, action: PowerAction, status: str) -> None:
    """``vm_powered`` is heard with the task's end (one transaction with its outcome)."""
    async with core.db.session() as s:
        stored = await s.get(Task, task.id)
        if stored is not None:
            defer_event(stored, "vm_powered", vm={"server_name": vm.host.server_name, "vm_uuid": vm.vm_uuid,
                                                  "owner_id": vm.owner_id, "status": status}, action=action.value)


async def _record_host_state(core: CoreContext, vm: VM) -> VMInfo:
    """Read the VM's state from the host and record it."""
    info: VMInfo = await core.engines.vm_status(vm)
    await apply_live(core, vm.id, info)
    return info


# Recovery rule of an interrupted power action: the action's outcome is whatever the host has, so the
# VM's state is read from the host and recorded; the task succeeds when it is the state the action asked
# for, and fails (saying what the host has) when it is not. A VM gone from the host fails the task.
@task_recovery("vm_power")
async def _recover_power(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    action = PowerAction(task.params["action"])
    async with core.db.session() as s:
        vm = await task_vm(s, task, f"while {action.value} was running")
    progress(50, f"reading the state of {vm.vm_uuid} on the host")
    info = await _record_host_state(core, vm)
    if info.status != END_STATUS[action]:
        raise errors.VMOperationFailed(f"the server stopped during {action.value} of {vm.vm_uuid}, which is "
                                       f"{info.status} on the host: recorded as such; try again")
    await _tell_powered(core, task, vm, action, info.status)
    return {"vm_uuid": vm.vm_uuid, "action": action.value, "status": info.status, "power_state": info.power_state,
            "message": f"{action.value} was done: {vm.vm_uuid} is {info.status} on the host"}
