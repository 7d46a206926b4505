"""The kit on an engine that can do little: what it lacks is skipped (after the 1006 check), never failed.

A newcomer builds an engine hook by hook (docs/writing-an-engine.md); the kit must be
usable from the first hook on. This runs the kit in a pytest of its own (pytester)
against an in-process engine that only reaches its host and lists VMs.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

MODULE = '''
import pytest

from idcs_core import errors
from idcs_core.hookspecs import hookimpl
from idcs_core.plugins import PluginRegistry
from idcs_core.testing.kit import EngineUnderTest, KitTests
from idcs_core.types import HostSpec, HostStatus, VMInfo


class HostOnly:
    @hookimpl
    def engine_describe(self):
        return {"title": "Host only"}

    @hookimpl
    def host_connect(self, host: HostSpec) -> HostStatus:
        return self.host_status(host)

    @hookimpl
    def host_status(self, host: HostSpec) -> HostStatus:
        if host.addr != "mini://up":
            raise errors.HostUnreachable(f"nothing answers at {host.addr}")
        return HostStatus(online=True, vms_count=0, version="1")

    @hookimpl
    def vm_list(self, host: HostSpec) -> list[VMInfo]:
        return []


@pytest.fixture(scope="module")
def idcs_engine():
    registry = PluginRegistry()
    assert registry.register_engine("HostOnly", HostOnly()) is not None, registry.failures
    return EngineUnderTest(server_type="HostOnly", server_addr="mini://up", server_user="", server_pass="",
                           image="none", unreachable_addr="mini://down", plugins=registry, host_timeout=2.0)


class TestHostOnlyKit(KitTests):
    pass
'''


def test_kit_skips_what_a_minimal_engine_lacks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mini_kit=MODULE)
    result = pytester.runpytest_subprocess("-q", "-rs", "-p", "no:cacheprovider", "--timeout=300")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()[-3000:]
    # the host cases ran for real; every case that needs a VM was skipped, saying why
    assert outcomes.get("passed", 0) >= 4, outcomes
    assert outcomes.get("skipped", 0) >= 12, outcomes
    result.stdout.fnmatch_lines(["*the engine cannot create VMs*"])
