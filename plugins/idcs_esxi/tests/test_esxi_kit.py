"""The engine conformance kit (idcs_core.testing.kit) against vcsim, through the REST API of
a real idcs server: once against the vCenter model and once against the standalone ESXi model.

What the simulator cannot show is declared: it runs no guests, so no guest file access
(backup/restore, disks and reinstall are proven on the vSphere side only), no HTTP inside a
VM, and vSphere has no NAT (1006). The VMs' VNC consoles are served by a real Xvnc standing
in for the ESXi host's VNC server, on the port range given to the host (``vnc_ports``).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from idcs_esxi import testing

from idcs_core.testing.kit import EngineUnderTest, KitTests


@pytest.fixture(scope="module")
def idcs_engine(vcsim: testing.Vcsim, esxi_workdir: Path) -> Iterator[EngineUnderTest]:
    vnc = testing.start_vnc(esxi_workdir / f"vnc-{vcsim.model}")
    pid = vcsim.pid
    try:
        yield EngineUnderTest(
            server_type="vSphereESXi", server_addr=vcsim.addr, server_user=vcsim.user, server_pass=vcsim.password,
            # one console port: the kit's VMs made through the engine never exist at the same time
            options={"verify_tls": False, "timeout": 4, "vnc_ports": f"{vnc.port}-{vnc.port}",
                     "console_address": "127.0.0.1"},
            bad_password="Wrong-Pass-1", image=testing.TEMPLATE, unreachable_addr="https://127.0.0.1:9",
            make_foreign_vm=lambda name: testing.make_vm(vcsim, name),
            remove_foreign_vm=lambda name: testing.remove_vm(vcsim, name),
            # SIGSTOP freezes the simulator: it stops answering without losing anything
            take_down=lambda: os.kill(pid, signal.SIGSTOP), bring_up=lambda: os.kill(pid, signal.SIGCONT),
            # the datastore path as os-images lists it (kind iso), brackets and space included
            iso_name="[LocalDS_0] iso/debian-12.iso",
            vm_spec={"cpu_num": 1, "ram_num": 128, "hdd_num": 2}, host_timeout=5.0,
        )
    finally:
        vnc.stop()


class TestESXiKit(KitTests):
    """Every applicable kit case, against the vCenter and the ESXi model of vcsim."""
