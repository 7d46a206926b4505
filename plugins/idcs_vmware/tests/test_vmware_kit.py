"""The engine conformance kit (idcs_core.testing.kit) against the vmrest stand-in.

Tested against the stand-in only (``tests/vmrest_standin``), never a real Workstation.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from vmrest_standin.launch import TEMPLATE, StandIn
from vmrest_standin.server import GUEST_BODY, GUEST_HTTP_PORT

from idcs_core.testing.backends import free_port
from idcs_core.testing.kit import EngineUnderTest, KitTests


@pytest.fixture(scope="module")
def idcs_engine(vmrest: StandIn) -> Iterator[EngineUnderTest]:
    def make_foreign(name: str) -> None:  # a clone made straight through vmrest
        parent = vmrest.vm_id(TEMPLATE)
        assert vmrest.call("POST", "/api/vms", {"name": name, "parentId": parent}).status_code == 201

    def remove_foreign(name: str) -> None:
        vm_id = vmrest.vm_id(name)
        if vm_id is not None:
            vmrest.call("PUT", f"/api/vms/{vm_id}/power", raw="off")
            vmrest.call("DELETE", f"/api/vms/{vm_id}")

    yield EngineUnderTest(
        server_type="VmwareWork", server_addr=vmrest.url, server_user=vmrest.user, server_pass=vmrest.password,
        bad_password="not-the-password", image=TEMPLATE, unreachable_addr=f"http://127.0.0.1:{free_port()}",
        options={"vnc_ports": "47100-47199", "timeout": 10},
        # the stand-in's VM disk is a folder: the reinstall case proves a fresh system disk with it
        write_file=vmrest.write_file, read_file=vmrest.read_file,
        http_port=GUEST_HTTP_PORT, http_body=GUEST_BODY,
        make_foreign_vm=make_foreign, remove_foreign_vm=remove_foreign,
        # SIGSTOP freezes the stand-in: it accepts connections and never answers, losing nothing
        take_down=lambda: os.kill(vmrest.pid, signal.SIGSTOP), bring_up=lambda: os.kill(vmrest.pid, signal.SIGCONT),
        vm_spec={"cpu_num": 1, "ram_num": 256, "hdd_num": 1}, host_timeout=3.0,
        declared={"vm_create", "vm_update", "vm_delete", "vm_reinstall", "power", "scan", "images", "console", "ip",
                  "nat"},
    )


class TestVmwareKit(KitTests):
    """Every applicable kit case through the REST API of a real server; disks, ISOs, backups,
    passwords and terminals answer 1006 (vmrest has no calls for them)."""
