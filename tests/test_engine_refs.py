"""VM refs: the engine's own id of a VM is stored by the core and handed back on every VM hook.

TestLab gives each VM a ref unlike its name (``labref-<hex>``) and records the ref every VM
hook received, so these tests see what reached the engine, also after a server restart.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import create_vm
from testlab import PASSWORD, REF_PREFIX, LabVM, TestLabEngine

from idcs_core.plugins import PluginRegistry
from idcs_core.testing.databases import database_url, drop_postgres_schema
from idcs_core.testing.server import ApiClient, LiveServer
from idcs_core.types import VMSpec


def _lab_vm(lab: TestLabEngine, addr: str, vm_uuid: str) -> LabVM:
    return lab.hosts[addr].vms[vm_uuid]


def _refs_of(lab: TestLabEngine, addr: str, hook: str) -> list[str]:
    return [ref for name, ref in lab.hosts[addr].refs if name == hook]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_ref_reaches_every_vm_hook_after_a_restart(db: str, tmp_path: Path, lab: TestLabEngine,
                                                   registry: PluginRegistry) -> None:
    url = database_url(db, tmp_path)
    addr = f"lab://refs-{db}-{time.monotonic_ns()}"
    try:
        with LiveServer(tmp_path, database_url=url, plugins=registry) as srv:
            admin = srv.admin()
            admin.post("/api/server/create", {"server_name": "h", "server_type": "TestLab", "server_addr": addr,
                                              "server_user": "u", "server_pass": PASSWORD,
                                              "ports_start": 21000, "ports_close": 21010})
            create_vm(admin, "h", "v1")
            ref = _lab_vm(lab, addr, "v1").ref
            assert ref.startswith(REF_PREFIX) and ref != "v1"
            detail = admin.get("/api/client/detail/h/v1")
            assert _refs_of(lab, addr, "vm_status")[-1] == ref
            assert ref not in str(detail), "the engine's ref is internal: never in an answer"
        lab.hosts[addr].refs.clear()
        with LiveServer(tmp_path, database_url=url, plugins=registry) as srv:
            admin = srv.admin()
            admin.post("/api/client/powers/h/v1", {"action": "H_CLOSE"})
            assert _refs_of(lab, addr, "vm_power") == [ref]
            assert _lab_vm(lab, addr, "v1").status == "stopped"
            admin.post("/api/client/natadd/h/v1", {"host_port": 21001, "vm_port": 22, "protocol": "tcp"})
            assert _refs_of(lab, addr, "nat_add") == [ref]
            admin.run_task("PUT", "/api/client/update/h/v1", {"cpu_num": 2})
            assert _refs_of(lab, addr, "vm_update") == [ref]
            assert _lab_vm(lab, addr, "v1").spec.cpu_num == 2
            admin.run_task("DELETE", "/api/client/delete/h/v1")
            assert _refs_of(lab, addr, "vm_delete") == [ref]
            assert "v1" not in lab.hosts[addr].vms
    finally:
        if db == "postgresql":
            drop_postgres_schema(url)


def test_scan_and_list_store_the_engines_ref(admin: ApiClient, host: str, lab: TestLabEngine) -> None:
    addr = f"lab://{host}"
    admin.get(f"/api/server/detail/{host}")  # the host's lab exists once it was called
    found = LabVM(spec=VMSpec("imported", "debian-12", 1, 256, 1))
    lab.hosts[addr].vms["imported"] = found  # made on the host behind the core's back
    admin.post(f"/api/client/scaner/{host}", {})
    lab.hosts[addr].refs.clear()
    admin.post(f"/api/client/powers/{host}/imported", {"action": "S_PAUSE"})
    assert _refs_of(lab, addr, "vm_power") == [found.ref]

    # the back end re-registers the VM under a new id: the next list stores it, and hooks get it
    found.ref = f"{REF_PREFIX}moved"
    admin.get(f"/api/client/detail/{host}")  # the host's VM list (vm_list reports the new ref)
    lab.hosts[addr].refs.clear()
    admin.post(f"/api/client/powers/{host}/imported", {"action": "S_RESUME"})
    assert _refs_of(lab, addr, "vm_power") == [f"{REF_PREFIX}moved"]
    assert found.status == "running"
