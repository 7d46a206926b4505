"""Deleting a VM while another operation of its instance holds it: LXD answers "Instance is busy"
(a graceful stop waiting for a guest that ignores the stop signal, a restart still settling); the
delete waits for it, bounded, instead of failing (users and test teardowns both hit it)."""

from __future__ import annotations

from idcs_lxd import instances, naming
from idcs_lxd.engine import LXDEngine

from idcs_core.types import HostSpec, PowerAction, VMSpec


def _quiet(percent: int, message: str = "") -> None:
    pass


def test_delete_waits_while_a_graceful_stop_holds_the_instance(engine: LXDEngine, host: HostSpec,
                                                                spec: VMSpec) -> None:
    engine.vm_create(host=host, spec=spec, progress=_quiet)
    client = engine.clients.get(host)
    name = naming.instance_name(spec.vm_uuid)
    try:
        engine.vm_power(host=host, vm_uuid=spec.vm_uuid, action=PowerAction.HARD_OFF)
        # the guest's init ignores SIGWINCH: a graceful stop waits its whole timeout, holding the instance
        instances.patch(client, name, {"config": {"raw.lxc": "lxc.signal.halt = SIGWINCH"}})
        engine.vm_power(host=host, vm_uuid=spec.vm_uuid, action=PowerAction.START)
        client.api.instances[name].state.put(json={"action": "stop", "timeout": 8, "force": False})  # not awaited
        engine.vm_delete(host=host, vm_uuid=spec.vm_uuid, progress=_quiet)
        assert not instances.exists(client, name)
    finally:
        instances.delete(client, name)
