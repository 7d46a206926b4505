"""Deleting a VM while another state change of its instance is under way (a stop or a restart
started a moment earlier, by a user or the guest): LXD and Incus answer "already stopped", "is not
running" or "Instance is busy" to the delete's force stop; the delete looks again (bounded) and
deletes, instead of failing -- users and test teardowns both met it."""

from __future__ import annotations

import pytest
from idcs_lxd import instances, naming
from idcs_lxd.engine import LXDEngine

from idcs_core.types import HostSpec, VMSpec


def _quiet(percent: int, message: str = "") -> None:
    pass


@pytest.mark.parametrize("action", ["stop", "restart"])
def test_delete_right_after_a_state_change_started(engine: LXDEngine, host: HostSpec, spec: VMSpec,
                                                    action: str) -> None:
    engine.vm_create(host=host, spec=spec, progress=_quiet)
    client = engine.clients.get(host)
    name = naming.instance_name(spec.vm_uuid)
    try:
        # started and not awaited, as another client (or the guest's own poweroff) would
        client.api.instances[name].state.put(json={"action": action, "timeout": 10, "force": False})
        engine.vm_delete(host=host, vm_uuid=spec.vm_uuid, progress=_quiet)
        assert not instances.exists(client, name)
    finally:
        instances.delete(client, name)
