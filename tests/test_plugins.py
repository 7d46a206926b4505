"""Plugin discovery and dispatch: each engine gets only its hosts' calls; broken plugins are
reported and never take the server down; a third-party package works with no core change."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from idcs_core import errors
from idcs_core.hookspecs import hookimpl
from idcs_core.plugins import PluginRegistry, load_plugins
from idcs_core.testing.server import LiveServer
from idcs_core.types import HostSpec, HostStatus, VMInfo


class Recorder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[str] = []

    @hookimpl
    def host_status(self, host: HostSpec) -> HostStatus:
        self.calls.append(f"status:{host.name}")
        return HostStatus(version=self.name)

    @hookimpl
    async def vm_status(self, host: HostSpec, vm_uuid: str) -> VMInfo:
        self.calls.append(f"vm:{vm_uuid}")
        return VMInfo(vm_uuid, "running", self.name)


class Misspelt:
    @hookimpl
    def host_stauts(self, host: HostSpec) -> HostStatus:  # not a hook: the load must fail
        return HostStatus()


async def test_calls_reach_only_the_engine_of_the_host_type() -> None:
    reg = PluginRegistry()
    a, b = Recorder("A"), Recorder("B")
    reg.register_engine("EngA", a)
    reg.register_engine("EngB", b)
    spec = HostSpec("h1", "EngB", "x", "u", "p")
    status = await reg.engine("EngB").call("host_status", spec, timeout=5)
    info = await reg.engine("EngB").call("vm_status", spec, timeout=5, vm_uuid="v1", ref="v1")
    assert (status.version, info.power_state) == ("B", "B")
    assert (a.calls, b.calls) == ([], ["status:h1", "vm:v1"])
    assert reg.engine("EngA").capabilities == []  # host_status and vm_status give no capability of their own
    with pytest.raises(errors.NotSupported, match="vm power is not supported by the EngA engine"):
        await reg.engine("EngA").call("vm_power", spec, timeout=5, vm_uuid="v1", ref="v1", action="S_START")
    with pytest.raises(errors.NotSupported):
        reg.engine("NoSuch")


async def test_timeouts_and_crashes_become_business_errors() -> None:
    import time

    class Slow:
        @hookimpl
        def host_status(self, host: HostSpec) -> HostStatus:
            time.sleep(2)
            return HostStatus()

        @hookimpl
        def vm_status(self, host: HostSpec, vm_uuid: str) -> VMInfo:
            raise KeyError("sdk blew up")

    reg = PluginRegistry()
    reg.register_engine("Slow", Slow())
    spec = HostSpec("h", "Slow", "x", "u", "p")
    started = time.monotonic()
    with pytest.raises(errors.HostUnreachable, match=r"did not answer host_status within 0\.3 s"):
        await reg.engine("Slow").call("host_status", spec, timeout=0.3)
    assert time.monotonic() - started < 1.0
    with pytest.raises(errors.VMOperationFailed, match="sdk blew up"):
        await reg.engine("Slow").call("vm_status", spec, timeout=5, vm_uuid="v", ref="v")


def test_misspelt_hook_is_a_recorded_load_failure() -> None:
    reg = PluginRegistry()
    assert reg.register_engine("Bad", Misspelt()) is None
    assert "Bad" not in reg.engines
    assert reg.failures[0].name == "Bad" and "host_stauts" in reg.failures[0].error


THIRD_PARTY = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "idcs-tinyengine"
        version = "0.3.0"
        dependencies = []

        [project.entry-points."idcs.engines"]
        TinyEngine = "idcs_tinyengine:TinyEngine"
        BrokenEngine = "idcs_tinyengine_missing:Nothing"
    """,
    "idcs_tinyengine/__init__.py": '''
        """A third-party engine written outside the core: VMs live in a JSON file."""
        import json
        from pathlib import Path

        from idcs_core import errors
        from idcs_core.hookspecs import hookimpl
        from idcs_core.types import HostStatus, PowerAction, VMInfo


        class TinyEngine:
            def _load(self, host):
                path = Path(host.addr)
                if not path.parent.is_dir():
                    raise errors.HostUnreachable(f"no such folder {path.parent}")
                return path, (json.loads(path.read_text()) if path.exists() else {})

            @hookimpl
            def host_connect(self, host):
                return self.host_status(host)

            @hookimpl
            def host_status(self, host):
                _path, vms = self._load(host)
                return HostStatus(cpu_usage=1.0, memory_usage=2.0, vms_count=len(vms), version="tiny-0.3")

            @hookimpl
            def vm_create(self, host, spec):
                path, vms = self._load(host)
                vms[spec.vm_uuid] = "stopped"
                path.write_text(json.dumps(vms))
                return VMInfo(spec.vm_uuid, "stopped", "off")

            @hookimpl
            def vm_power(self, host, vm_uuid, action):
                path, vms = self._load(host)
                if vm_uuid not in vms:
                    raise errors.VMNotFound(vm_uuid)
                vms[vm_uuid] = "running" if action == PowerAction.START else "stopped"
                path.write_text(json.dumps(vms))
                return VMInfo(vm_uuid, vms[vm_uuid], vms[vm_uuid])

            @hookimpl
            def vm_status(self, host, vm_uuid):
                _path, vms = self._load(host)
                if vm_uuid not in vms:
                    raise errors.VMNotFound(vm_uuid)
                return VMInfo(vm_uuid, vms[vm_uuid], vms[vm_uuid])

            @hookimpl
            def vm_list(self, host):
                _path, vms = self._load(host)
                return [VMInfo(k, v, v) for k, v in vms.items()]
    ''',
}


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip-install the third-party package from a temporary folder into a folder of its own."""
    src = tmp_path_factory.mktemp("tiny-src")
    for rel, text in THIRD_PARTY.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(textwrap.dedent(text).lstrip())
    site = tmp_path_factory.mktemp("tiny-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(site), str(src)], check=True)
    return site


def test_third_party_engine_installed_from_a_folder_works_through_the_api(tiny_site: Path, tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(tiny_site)}
    out = subprocess.run([sys.executable, "-m", "idcs_core.cli", "plugins"], env=env | _base_env(),
                         capture_output=True, text=True)
    assert "TinyEngine" in out.stdout and "idcs-tinyengine 0.3.0" in out.stdout
    assert "BrokenEngine" in out.stdout and "FAILED" in out.stdout and "idcs_tinyengine_missing" in out.stdout
    assert out.returncode == 1  # a failed plugin makes `idcs plugins` say so in its exit code

    with LiveServer(tmp_path / "srv", subprocess_mode=True, env=env) as srv:
        admin = srv.admin()
        assert "TinyEngine" in admin.get("/api/system/engine")
        failures = [p for p in admin.get("/api/system/plugins") if p.get("error")]
        assert [p["name"] for p in failures] == ["BrokenEngine"]
        admin.post("/api/server/create", {"server_name": "tiny1", "server_type": "TinyEngine",
                                          "server_addr": str(tmp_path / "vms.json"), "server_user": "",
                                          "server_pass": ""})
        admin.run_task("POST", "/api/client/create/tiny1", {"vm_uuid": "t1", "os_name": "any", "cpu_num": 1,
                                                            "ram_num": 64, "hdd_num": 0})
        assert admin.post("/api/client/powers/tiny1/t1", {"action": "S_START"})["status"] == "running"
        assert admin.get("/api/client/detail/tiny1/t1")["status"] == "running"
        status, body = admin.call("POST", "/api/client/backup/create/tiny1/t1", {})
        assert (status, body["code"]) == (501, 1006)
        hosts = admin.get("/api/server/detail")
        assert hosts[0]["status"] == "online" and hosts[0]["version"] == "tiny-0.3"


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_load_plugins_honours_the_engine_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDCS_LOAD_ENGINES", "NoSuchEngineAtAll")
    reg = load_plugins()
    assert reg.engines == {}
