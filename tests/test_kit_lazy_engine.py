"""The kit proves effects: an engine that only flips status words fails it.

``LazyLab`` is the example engine (on its fake back end, FakeCloud) with four promises
kept on paper only, the way a third-party engine once passed the kit:

- power actions change the status word the engine reports, never the VM itself;
- ``vm_update`` answers the new spec and changes nothing on the back end;
- ``nat_sync`` does nothing, so a forward lost on the host stays lost;
- ``nat_add`` never asks the host whether the port is free (it relies on the core's records).

The same cases run against the honest example engine on the same kind of back end (the
control): they pass there, so each failure of LazyLab is its laziness and nothing else.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

MODULE = '''
import pytest
from idcs_example import fakecloud
from idcs_example.engine import ExampleEngine, backend_errors, cloud, vm_info

from idcs_core.hookspecs import hookimpl
from idcs_core.plugins import PluginRegistry
from idcs_core.testing.kit import EngineUnderTest, KitTests
from idcs_core.types import HostSpec, NatRule, PowerAction, VMInfo, VMSpec

WORDS = {PowerAction.START: "running", PowerAction.HARD_OFF: "stopped", PowerAction.STOP: "stopped",
         PowerAction.RESET: "running", PowerAction.PAUSE: "paused", PowerAction.RESUME: "running"}


class LazyEngine(ExampleEngine):
    """Reports what was asked for; the back end never hears of it."""

    def __init__(self) -> None:
        self.words: dict[str, str] = {}

    def _said(self, info: VMInfo) -> VMInfo:
        info.status = self.words.get(info.vm_uuid, info.status)
        info.power_state = info.status.upper()
        return info

    @hookimpl
    def vm_power(self, host: HostSpec, vm_uuid: str, action: PowerAction) -> VMInfo:
        with backend_errors(f"{action.value} {vm_uuid}"):
            vm = cloud(host).vm(vm_uuid)
        self.words[vm_uuid] = WORDS[action]
        return self._said(vm_info(vm))

    @hookimpl
    def vm_status(self, host: HostSpec, vm_uuid: str) -> VMInfo:
        with backend_errors(f"status of {vm_uuid}"):
            return self._said(vm_info(cloud(host).vm(vm_uuid)))

    @hookimpl
    def vm_list(self, host: HostSpec) -> list[VMInfo]:
        c = cloud(host)
        with c.lock:
            return [self._said(vm_info(vm)) for vm in c.vms.values()]

    @hookimpl
    def vm_update(self, host: HostSpec, spec: VMSpec) -> VMInfo:
        with backend_errors(f"update {spec.vm_uuid}"):
            info = vm_info(cloud(host).vm(spec.vm_uuid))
        info.cpu_num, info.ram_num, info.hdd_num = spec.cpu_num, spec.ram_num, spec.hdd_num
        return self._said(info)

    @hookimpl
    def nat_sync(self, host: HostSpec, vm_uuid: str, rules: list[NatRule]) -> None:
        pass

    @hookimpl
    def nat_add(self, host: HostSpec, vm_uuid: str, rule: NatRule) -> NatRule:
        c = cloud(host)
        try:
            c.forward(rule.host_port, vm_uuid, rule.vm_port, rule.protocol)
        except fakecloud.PortTaken:
            pass  # the core's records said the port was free: good enough for a lazy engine
        return rule


@pytest.fixture(scope="module", params=["honest", "lazy"])
def idcs_engine(request):
    addr = f"fake://lazy-kit-{request.param}"
    fake = fakecloud.start(addr, user="admin", password="s3cret")
    registry = PluginRegistry()
    engine = ExampleEngine() if request.param == "honest" else LazyEngine()
    assert registry.register_engine("LazyLab", engine) is not None, registry.failures
    yield EngineUnderTest(
        server_type="LazyLab", server_addr=addr, server_user="admin", server_pass="s3cret",
        image="fakeos-1.0", unreachable_addr="fake://nobody-home", plugins=registry,
        write_file=fake.write_file, read_file=fake.read_file,
        http_port=fakecloud.HTTP_PORT, http_body=fakecloud.HTTP_BODY,
        guest_resources=fake.guest_resources, update_applies="live",
        drop_forward=lambda _vm, port, protocol: fake.unforward(port, protocol),
        host_timeout=2.0, settle_timeout=4.0,  # FakeCloud's effects are immediate: fail fast
    )
    fakecloud.stop(addr)


class TestLazyKit(KitTests):
    pass
'''

CASES = ("test_power_actions_and_status_afterwards", "test_update_reaches_the_guest",
         "test_nat_rules_survive_a_server_restart", "test_nat_port_held_by_a_foreign_program_answers_4002")


def test_an_engine_that_only_flips_status_words_fails_the_kit(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_lazy_kit=MODULE)
    result = pytester.runpytest_subprocess("-q", "-rfEs", "-p", "no:cacheprovider", "--timeout=300",
                                           "-k", " or ".join(CASES))
    out = result.stdout.str()
    for case in CASES:
        result.stdout.fnmatch_lines([f"FAILED test_lazy_kit.py::TestLazyKit::{case}?lazy?*"])
        assert f"FAILED test_lazy_kit.py::TestLazyKit::{case}[honest]" not in out, out[-4000:]
    outcomes = result.parseoutcomes()
    assert (outcomes.get("passed", 0), outcomes.get("failed", 0)) == (len(CASES), len(CASES)), out[-4000:]
    assert outcomes.get("errors", 0) == 0 and outcomes.get("skipped", 0) == 0, out[-4000:]
    # each failure names the promise that was not kept
    for why in ("its workload still answers", "the change did not reach the back end",
                "nat_sync did not put back the forward", "expected code 4002"):
        assert why in out, (why, out[-4000:])
