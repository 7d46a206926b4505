"""Traffic counters and caps on a real Podman service (fixture ``podman_service``): Podman lists no
network endpoint ids, so the epoch is the container's start time; caps are ``tbf`` qdiscs on both
ends of its veth, seen with ``tc`` afterwards and gone once lifted."""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

from idcs_oci import traffic
from idcs_oci.engine import OCIEngine

from idcs_core.types import PowerAction, VMSpec


def qdiscs(args: list[str]) -> str:
    return subprocess.run(["tc", "qdisc", "show", *args], capture_output=True, text=True, check=True).stdout


def test_podman_counters_epoch_and_caps(podman_service: Any) -> None:
    engine, host = OCIEngine(), podman_service.host_spec("ops18-podman")
    vm = f"ops18-{uuid.uuid4().hex[:8]}"
    engine.vm_create(host=host, spec=VMSpec(vm_uuid=vm, os_name=podman_service.image, cpu_num=1, ram_num=64,
                                            hdd_num=1), progress=lambda *a: None)
    try:
        first = engine.vm_traffic(host=host, vm_uuids=[vm, "ops18-not-there"])
        assert list(first) == [vm] and first[vm].epoch.startswith("started:")
        engine.vm_power(host=host, vm_uuid=vm, action=PowerAction.RESET)
        assert engine.vm_traffic(host=host, vm_uuids=[vm])[vm].epoch != first[vm].epoch

        engine.vm_bandwidth(host=host, vm_uuid=vm, up_mbit=10, down_mbit=20)
        conn = engine.clients.connect(host)
        pid, pairs = traffic.interfaces(conn, vm)
        (inner, veth), = pairs
        assert "rate 20Mbit" in qdiscs(["dev", veth])  # what the container receives
        inside = subprocess.run(["nsenter", "-t", str(pid), "-n", "tc", "qdisc", "show", "dev", inner],
                                capture_output=True, text=True, check=True).stdout
        assert "rate 10Mbit" in inside  # what it sends
        engine.vm_bandwidth(host=host, vm_uuid=vm, up_mbit=0, down_mbit=0)
        assert "tbf" not in qdiscs(["dev", veth])
    finally:
        engine.vm_delete(host=host, vm_uuid=vm, progress=lambda *a: None)
        engine.clients.close_all()
