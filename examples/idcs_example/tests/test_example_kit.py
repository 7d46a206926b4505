"""The conformance kit against the example engine and its fake back end.

This is all an engine's kit module needs: an ``idcs_engine`` fixture describing a
live back end, and a class that inherits the kit's cases.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from idcs_example import fakecloud

from idcs_core.testing.kit import EngineUnderTest, KitTests

ADDR = "fake://kit-lab"


@pytest.fixture(scope="module")
def idcs_engine() -> Iterator[EngineUnderTest]:
    cloud = fakecloud.start(ADDR, user="admin", password="s3cret")

    def make_foreign_vm(name: str) -> None:
        cloud.create_vm(name, "fakeos-1.0", cpu=1, ram_mb=64, hdd_gb=1)

    yield EngineUnderTest(
        server_type="ExampleLab",  # loaded from the installed entry point (plugins=None)
        server_addr=ADDR, server_user="admin", server_pass="s3cret", bad_password="wrong",
        image="fakeos-1.0", unreachable_addr="fake://nobody-home",
        write_file=cloud.write_file, read_file=cloud.read_file, disk_path="/mnt/{disk}",
        http_port=fakecloud.HTTP_PORT, http_body=fakecloud.HTTP_BODY,
        make_foreign_vm=make_foreign_vm, remove_foreign_vm=cloud.delete_vm,
        take_down=lambda: setattr(cloud, "up", False), bring_up=lambda: setattr(cloud, "up", True),
        # effects: the guest's view of its CPUs/memory (updates apply live), and a forward lost on the host
        guest_resources=cloud.guest_resources, update_applies="live",
        drop_forward=lambda _vm, port, protocol: cloud.unforward(port, protocol),
        proxy_http=cloud.proxy_address(),
    )
    fakecloud.stop(ADDR)


class TestExampleKit(KitTests):
    """Every case of the kit; the fake back end implements every hook, so nothing is skipped."""
