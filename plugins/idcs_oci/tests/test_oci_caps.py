"""Bandwidth caps on a real Docker Engine: applying a cap again (the sampler does at every new
epoch, the core after each power action) changes the ``tbf`` qdisc in place and never deletes it
first, so a transfer under way is never uncapped, not even for a moment (the cause of a cap once
measured uncapped right after a restart in tests/test_ops_traffic.py)."""

from __future__ import annotations

import subprocess

from idcs_oci import traffic
from idcs_oci.engine import OCIEngine
from idcs_oci.testing import MakeVM

from idcs_core.types import HostSpec


def root_qdisc(dev: str) -> str:
    """``tbf 8001:``: the kind and handle of the interface's root qdisc (a new handle: deleted and made again)."""
    out = subprocess.run(["tc", "qdisc", "show", "dev", dev, "root"], capture_output=True, text=True, check=True).stdout
    return " ".join(out.split()[1:3])


def test_a_cap_applied_again_is_never_lifted_meanwhile(engine: OCIEngine, host: HostSpec, make_vm: MakeVM) -> None:
    vm = make_vm().vm_uuid
    engine.vm_bandwidth(host=host, vm_uuid=vm, up_mbit=10, down_mbit=10)
    (_inner, veth), = traffic.interfaces(engine.clients.connect(host), vm)[1]
    first = root_qdisc(veth)
    assert first.startswith("tbf "), first
    for _ in range(3):
        engine.vm_bandwidth(host=host, vm_uuid=vm, up_mbit=10, down_mbit=10)
        assert root_qdisc(veth) == first, "the cap was deleted and made again: uncapped meanwhile"
    engine.vm_bandwidth(host=host, vm_uuid=vm, up_mbit=20, down_mbit=20)  # a new rate: changed in place too
    assert root_qdisc(veth) == first
    engine.vm_bandwidth(host=host, vm_uuid=vm, up_mbit=0, down_mbit=0)
    assert not root_qdisc(veth).startswith("tbf ")
