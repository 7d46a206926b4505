"""Setting a guest's password: a task of kind ``vm_password`` (audited as ``vm.password`` when it ends).

The password is never stored with the task. The task's params hold the VM and the user name only;
the password is handed to the one run of the handler that the request waits on as a *secret* of
``TaskRunner.run``: in this process's memory when the task runs here, sealed with the server's key
in the queued job when a worker on another node runs it (procrastinate deletes the job row when it
ends). Why not sealed in the params, as a create's initial password is: a create must be able to
finish after a crash, so its password has to survive one; a password change has nothing to finish
that the caller cannot simply ask again, so the safest copy is the shortest-lived one. A run
without the secret (a recovery after a restart) fails the task saying so: "set it again".

A hook that answers after its timeout: the task has failed (1003); once the hook ends, its outcome
is logged (never the password), as the host may have taken the new password after all.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from idcs_core import errors
from idcs_core.db.models import Task
from idcs_core.services.late_hooks import settle_late
from idcs_core.services.lookup import get_vm, task_vm
from idcs_core.services.vms import ensure_idle
from idcs_core.tasks import task_handler, task_recovery

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal
    from idcs_core.tasks import TaskProgress

log = logging.getLogger("idcs.vms")

NOT_HELD = ("the password is never stored, and this run of the task does not have it (it was asked of a "
            "server that has stopped meanwhile): set it again")


async def set_password(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str,
                       password: str, username: str = "root") -> None:
    """Set ``username``'s password in the guest: a ``vm_password`` task, waited on."""
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        core.require(vm.host, "vm_set_password", "vm set password")
        ensure_idle(core, vm)
        task = core.tasks.add(s, "vm_password", host_name=hs_name, vm_uuid=vm_uuid, user_id=principal.user_id,
                              params={"vm_id": vm.id, "username": username})
    await core.tasks.run(task.id, secrets={"password": password})


@task_handler("vm_password")
async def _run_password(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    password = core.tasks.secret(task.id, "password")
    if password is None:
        raise errors.VMOperationFailed(NOT_HELD)
    username = str(task.params.get("username") or "root")
    async with core.db.session() as s:
        vm = await task_vm(s, task, "before its password was set")
    progress(10, f"setting the password of {username} in {vm.vm_uuid}")
    what = f"password of {username} in {vm.host.server_name}/{vm.vm_uuid}"
    try:
        await core.engines.vm_set_password(vm, username, password)
    except errors.IDCSError as exc:
        settle_late(core, exc, what, lambda _result: _late_password(what))
        raise
    return {"vm_uuid": vm.vm_uuid, "message": f"the password of {username} was set"}


async def _late_password(what: str) -> None:
    log.warning("%s: set after its task had timed out (the task says failed; the new password works)", what)


# Recovery rule of an interrupted password change: the password was never stored, so there is nothing
# to finish with; the task fails saying so (the host may or may not have taken it): set it again.
@task_recovery("vm_password")
async def _recover_password(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    raise errors.VMOperationFailed(f"the server stopped while the password was being set: {NOT_HELD}")
