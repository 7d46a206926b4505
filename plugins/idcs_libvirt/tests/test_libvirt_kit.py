"""The engine conformance kit (idcs_core.testing.kit) against the session's real libvirtd + QEMU.

Guest access for the kit's data proofs goes through the guest's own web server (a busybox
httpd CGI that reads and writes files on its virtio disks), reached on the test network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import libvirt
import pytest
from idcs_libvirt import domainxml, naming, network, testing
from idcs_libvirt.lifecycle import UNDEFINE, ET_volume
from idcs_libvirt.testing import guest_http, host_options

from idcs_core.testing.kit import EngineUnderTest, KitTests


def _define_foreign(conn: libvirt.virConnect, name: str) -> None:
    """A domain made straight through libvirt, behind OpenIDCS's back (defined, not started)."""
    pool = conn.storagePoolLookupByName(testing.POOL)
    base = pool.storageVolLookupByName(testing.IMAGE)
    pool.createXML(ET_volume(naming.root_volume(name), 1, (base.path(), "qcow2")), 0)
    plan = domainxml.DomainPlan(name=name, cpu_num=1, ram_mb=96, pool=testing.POOL,
                                root_volume=naming.root_volume(name), network=testing.NETWORK,
                                mac=network.new_mac(), os_name=testing.IMAGE)
    conn.defineXML(domainxml.build(plan))


def _remove_foreign(conn: libvirt.virConnect, name: str) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        dom = conn.lookupByName(name)
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        dom.undefineFlags(UNDEFINE)
    with contextlib.suppress(libvirt.libvirtError):
        conn.storagePoolLookupByName(testing.POOL).storageVolLookupByName(naming.root_volume(name)).delete(0)


@pytest.fixture(scope="module")
def idcs_engine(backend: testing.Backend) -> Iterator[EngineUnderTest]:
    # each helper opens its own connection: the offline case kills and restarts libvirtd
    def write_file(vm: str, path: str, text: str) -> None:
        with contextlib.closing(backend.connect()) as conn:
            resp = guest_http(conn, vm, f"/cgi-bin/file?{path}", body=text)
        assert resp.status_code == 200, resp.text

    def read_file(vm: str, path: str) -> str | None:
        with contextlib.closing(backend.connect()) as conn:
            resp = guest_http(conn, vm, f"/cgi-bin/file?{path}")
        return resp.text if resp.status_code == 200 else None

    def make_foreign(name: str) -> None:
        with contextlib.closing(backend.connect()) as conn:
            _define_foreign(conn, name)

    def remove_foreign(name: str) -> None:
        with contextlib.closing(backend.connect()) as conn:
            _remove_foreign(conn, name)

    yield EngineUnderTest(
        server_type="QEMU", server_addr=backend.uri, server_user="", server_pass="",
        options=host_options(), image=testing.IMAGE, iso_name=testing.ISO,
        unreachable_addr="qemu+tcp://127.0.0.1:9/system",
        write_file=write_file, read_file=read_file, disk_path="/mnt/{disk}",
        http_port=80, http_body=testing.HTTP_BODY,
        make_foreign_vm=make_foreign, remove_foreign_vm=remove_foreign,
        # libvirtd killed (SIGKILL) and started again: its guests keep running meanwhile
        take_down=backend.kill_libvirtd, bring_up=backend.start_libvirtd,
        # the busybox guest runs no QEMU guest agent: setting a password answers 1006, saying so
        unsupported=frozenset({"password"}),
        vm_spec={"cpu_num": 1, "ram_num": 128, "hdd_num": 1}, host_timeout=3.0,
    )
    with contextlib.suppress(libvirt.libvirtError):
        testing.cleanup(backend.connect(), "kit-")  # whatever a failed case left behind


class TestLibvirtKit(KitTests):
    """Every applicable kit case, through the REST API of a real server, on real QEMU."""
